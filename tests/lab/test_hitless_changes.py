"""Changing a service or a route never resets a connection, live or new, on either peer.

Topology ``harness.transit`` with kernel routes between the client LAN and s2's LAN (``route_s2_directly``): a
connection to s2 that Arctic does not divert still reaches it, through plain routing. So while a route or a service
comes or goes, every connection must complete one way or the other; a reset means a peer diverted traffic to a side
that was not ready for it (the source's data plane without the route yet, the target without the service, the
target having dropped a route the source still diverts).

Each test keeps connections going back to back from the client (one at a time, each a complete request and
answer) while the change is made through the API, until the change has reached both data planes and at least
``AFTER`` more connections went through; at least ``TOTAL`` in all. Not one may fail.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from harness import Host, Lab, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair, route_s2_directly, wait_until
from harness.servers import LabServer

pytestmark = pytest.mark.lab

PORT = 9000
S2, S2_LAN = "192.168.200.2", "192.168.200.0/24"
TOTAL, AFTER = 300, 50
REQUEST, ANSWER = b"q" * 2000, 3000


class AnswerServer(LabServer):
    """Reads the request to EOF, answers ``ANSWER`` bytes."""

    def handle(self, conn: socket.socket, peer: tuple) -> None:
        while conn.recv(1 << 16):
            pass
        conn.sendall(b"a" * ANSWER)


def one_exchange() -> None:
    """One complete connection from the client (runs in its namespace); raises on a reset or short answer."""
    with socket.create_connection((S2, PORT), timeout=10) as sock:
        sock.sendall(REQUEST)
        sock.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := sock.recv(1 << 16):
            got += len(chunk)
    if got != ANSWER:
        raise ConnectionError(f"short answer: {got} of {ANSWER} bytes")


@dataclass
class Traffic:
    """Back-to-back connections from the client in a thread of its namespace, until told to stop."""

    client: Host
    done: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _counted: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Traffic:
        threading.Thread(target=lambda: self.client.call(self._run, timeout=None), daemon=True).start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded in time as well as in count
        while not self._stop.is_set() and time.monotonic() < deadline and self.done < 20_000:
            try:
                one_exchange()
            except OSError as err:
                self.failures.append(f"connection {self.done}: {err!r}")
            with self._counted:
                self.done += 1
                self._counted.notify_all()
        self._stop.set()
        with self._counted:
            self._counted.notify_all()

    def wait_for(self, count: int) -> None:
        with self._counted:
            if not self._counted.wait_for(lambda: self.done >= count or self._stop.is_set(), timeout=120):
                raise TimeoutError(f"only {self.done} connections of {count}")

    def stop(self) -> None:
        self._stop.set()


# --- live connections: a transfer in flight keeps its path -----------------------------------------------------

class SlowServer(LabServer):
    """Answers ``SLOW_ANSWER`` bytes in paced chunks, after reading the request to EOF."""

    def handle(self, conn: socket.socket, peer: tuple) -> None:
        while conn.recv(1 << 16):
            pass
        for _ in range(SLOW_CHUNKS):
            conn.sendall(b"s" * SLOW_CHUNK)
            time.sleep(SLOW_PACE)  # the server's own pace: the transfer lasts while the change is made


SLOW_PORT, SLOW_CHUNK, SLOW_CHUNKS, SLOW_PACE = 9001, 16_384, 150, 0.02  # 2.4 MB over about 3 s


@pytest.fixture(scope="module")
def pair() -> Iterator[ArcticPair]:
    with root_namespace_untouched("the hitless change tests"), Lab(prefix="arhit") as lab:
        t = transit(lab)
        route_s2_directly(t)
        with ArcticPair.start(t, extra_config={"reconcile_interval": 30}) as p:
            servers = [AnswerServer(t.s2, S2, PORT), SlowServer(t.s2, S2, SLOW_PORT)]
            try:
                yield p
            finally:
                for server in servers:
                    server.sock.close()


@pytest.fixture(autouse=True)
def no_services(pair: ArcticPair) -> Iterator[None]:
    yield
    pair.delete_services()
    for name in ("a", "b"):
        wait_until(lambda name=name: not pair.dataplane_config(name).get("services"), what=f"agent-{name} clean")


def converged(pair: ArcticPair, check: Callable[[dict], bool]) -> None:
    """Both data planes run a configuration for which ``check`` holds (the change reached both peers)."""
    for name in ("a", "b"):
        wait_until(lambda name=name: check(pair.dataplane_config(name)), timeout=30,
                   what=f"agent-{name}'s data-plane config to follow the change")
        wait_until(lambda name=name: pair.fresh_stats(name).get("config_generation") is not None, timeout=30,
                   what=f"agent-{name}'s data plane to reload")


def carrying_service(pair: ArcticPair) -> tuple[str, int]:
    """A service with a route for s2's LAN that both data planes run: its id and its route's."""
    sid = pair.create_service()
    route_id = pair.add_routes(sid, {"dest_cidr": S2_LAN, "priority": 100})[0]
    converged(pair, lambda doc: bool(routes_of(doc, sid)))
    return sid, route_id


def routeless_service(pair: ArcticPair) -> str:
    """A service without routes that both data planes know (it diverts nothing yet)."""
    sid = pair.create_service()
    converged(pair, lambda doc: any(s["id"] == sid for s in doc.get("services", [])))
    return sid


def routes_of(doc: dict, sid: str) -> list[dict]:
    return next((s.get("routes", []) for s in doc.get("services", []) if s["id"] == sid), [])


def during(pair: ArcticPair, change: Callable[[], None], settled: Callable[[dict], bool]) -> Traffic:
    """Run ``change`` while connections flow; return the traffic once the change settled on both peers."""
    traffic = Traffic(pair.t.cl).start()
    try:
        traffic.wait_for(TOTAL // 3)
        change()
        converged(pair, settled)
        traffic.wait_for(max(TOTAL, traffic.done + AFTER))
    finally:
        traffic.stop()
    return traffic


def carried(pair: ArcticPair, sid: str) -> int:
    return pair.carried_by(sid, "a")


def assert_no_failures(traffic: Traffic) -> None:
    print(f"{traffic.done} connections, {len(traffic.failures)} failed")
    assert not traffic.failures, f"{len(traffic.failures)} of {traffic.done} failed: {traffic.failures[:5]}"


def test_adding_a_route_diverts_new_connections_without_resetting_any(pair):
    sid = routeless_service(pair)
    traffic = during(pair, lambda: pair.add_routes(sid, {"dest_cidr": S2_LAN, "priority": 100}),
                     lambda doc: bool(routes_of(doc, sid)))
    assert_no_failures(traffic)
    assert carried(pair, sid) > 0, "after the route was added, Arctic carried the connections"


def test_deleting_a_route_hands_connections_back_to_routing_without_resetting_any(pair):
    sid, route_id = carrying_service(pair)
    traffic = during(pair, lambda: pair.api("DELETE", f"/v1/services/{sid}/routes/{route_id}"),
                     lambda doc: not routes_of(doc, sid))
    assert_no_failures(traffic)


def test_updating_a_route_s_destination_resets_nothing(pair):
    sid, route_id = carrying_service(pair)
    traffic = during(pair, lambda: pair.api("PUT", f"/v1/services/{sid}/routes/{route_id}",
                                            json={"dest_cidr": "192.168.200.0/25"}),
                     lambda doc: [r.get("dest_cidr") for r in routes_of(doc, sid)] == ["192.168.200.0/25"])
    assert_no_failures(traffic)


def test_creating_a_service_with_its_route_resets_nothing(pair):
    created: list[str] = []

    def create() -> None:
        created.append(pair.create_service())
        pair.add_routes(created[0], {"dest_cidr": S2_LAN, "priority": 100})

    traffic = during(pair, create, lambda doc: bool(created) and bool(routes_of(doc, created[0])))
    assert_no_failures(traffic)
    assert carried(pair, created[0]) > 0


def test_updating_a_service_resets_nothing(pair):
    sid, _route_id = carrying_service(pair)
    traffic = during(pair, lambda: pair.api("PUT", f"/v1/services/{sid}", json={"bandwidth_limit_mbps": 200,
                                                                                   "transport_type": "kcp"}),
                     lambda doc: any(s["id"] == sid and s.get("transport_type") == "kcp"
                                     for s in doc.get("services", [])))
    assert_no_failures(traffic)


def test_deleting_a_service_hands_connections_back_to_routing_without_resetting_any(pair):
    sid, _route_id = carrying_service(pair)
    traffic = during(pair, lambda: pair.api("DELETE", f"/v1/services/{sid}"),
                     lambda doc: not any(s["id"] == sid for s in doc.get("services", [])))
    assert_no_failures(traffic)


def slow_transfer(started: threading.Event) -> int:
    """One long download from s2 (runs in the client's namespace); the bytes received."""
    with socket.create_connection((S2, SLOW_PORT), timeout=15) as sock:
        sock.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := sock.recv(1 << 16):
            got += len(chunk)
            started.set()
        return got


def with_a_transfer_in_flight(pair: ArcticPair, change: Callable[[], None], settled: Callable[[dict], bool]) -> int:
    started, result = threading.Event(), []
    worker = threading.Thread(target=lambda: result.append(pair.t.cl.call(slow_transfer, started, timeout=60)),
                              daemon=True)
    worker.start()
    assert started.wait(10), "the transfer did not start"
    change()
    converged(pair, settled)
    worker.join(timeout=60)
    return result[0] if result else -1


def test_a_direct_transfer_in_flight_keeps_its_path_when_a_route_for_it_appears(pair):
    sid = routeless_service(pair)
    got = with_a_transfer_in_flight(pair, lambda: pair.add_routes(sid, {"dest_cidr": S2_LAN, "priority": 100}),
                                    lambda doc: bool(routes_of(doc, sid)))
    assert got == SLOW_CHUNK * SLOW_CHUNKS


def test_a_carried_transfer_in_flight_completes_when_its_last_route_and_its_service_go(pair):
    sid, route_id = carrying_service(pair)
    got = with_a_transfer_in_flight(pair, lambda: pair.api("DELETE", f"/v1/services/{sid}/routes/{route_id}"),
                                    lambda doc: not routes_of(doc, sid))
    assert got == SLOW_CHUNK * SLOW_CHUNKS
    assert carried(pair, sid) >= 1


def test_a_carried_transfer_in_flight_completes_when_its_service_is_deleted(pair):
    sid, _route_id = carrying_service(pair)
    got = with_a_transfer_in_flight(pair, lambda: pair.api("DELETE", f"/v1/services/{sid}"),
                                    lambda doc: not any(s["id"] == sid for s in doc.get("services", [])))
    assert got == SLOW_CHUNK * SLOW_CHUNKS
