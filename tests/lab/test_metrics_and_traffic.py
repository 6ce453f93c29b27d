"""Metrics and live counters move exactly as real traffic does, and a real Prometheus reads them.

Topology ``harness.transit``: client ``cl`` 10.0.0.2 -> agent-a 198.18.0.1 (source peer) -> agent-b 198.18.0.2
(target peer) -> server s1 192.168.100.2. ``/metrics`` and the API are read from the ``ctl`` host (198.18.0.100),
which is not loopback: every read carries a bearer token, as a Prometheus server's would. Prometheus itself (the
Debian package) runs in the ``ctl`` namespace and fetches its tokens with its own ``oauth2`` client.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from harness import Host, Lab, http, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair, wait_until
from harness.servers import LabServer
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.lab

PORT, CLOSED_PORT = 9000, 9001
CLIENT, S1 = "10.0.0.2", "192.168.100.2"
UPLOAD, REPLY = 300_000, 100_000  # bytes the client sends, bytes the server answers
RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "arctic.rules.yml"
PROMETHEUS = "127.0.0.1:9090"  # inside the ctl namespace


class SinkServer(LabServer):
    """Reads until the client half-closes, then answers ``REPLY`` bytes (or streams while ``streaming``)."""

    def handle(self, conn: socket.socket, peer: tuple) -> None:
        while conn.recv(1 << 16):
            pass
        conn.sendall(b"r" * REPLY)


def exchange_here(dst: str = S1, port: int = PORT, upload: int = UPLOAD, *, pace: float = 0.0) -> int:
    """Connect, send ``upload`` bytes (``pace`` seconds between 32 KiB chunks), half-close, read the answer to EOF;
    the number of bytes answered. Runs in the caller's namespace: call it through ``Host.call``."""
    with socket.create_connection((dst, port), timeout=10) as sock:
        for offset in range(0, upload, 1 << 15):
            sock.sendall(b"u" * min(1 << 15, upload - offset))
            if pace:
                time.sleep(pace)
        sock.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := sock.recv(1 << 16):
            got += len(chunk)
        return got


def exchange(host: Host, upload: int = UPLOAD, *, pace: float = 0.0) -> int:
    return host.call(exchange_here, upload=upload, pace=pace, timeout=120)


def refused(host: Host, dst: str, port: int) -> bool:
    """A connection the target cannot complete ends with a reset (or EOF) towards the client."""
    def run() -> bool:
        try:
            with socket.create_connection((dst, port), timeout=10) as sock:
                return sock.recv(1) == b""
        except (ConnectionResetError, ConnectionRefusedError):
            return True
    return host.call(run, timeout=30)


@pytest.fixture(scope="module")
def pair() -> Iterator[ArcticPair]:
    with root_namespace_untouched("the metrics tests"), Lab(prefix="armet") as lab:
        t = transit(lab)
        with ArcticPair.start(t, extra_config={"reconcile_interval": 5}) as p:
            server = SinkServer(t.s1, S1, PORT)
            try:
                sid = p.create_service(name="web")
                p.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
                for name in ("a", "b"):
                    wait_until(lambda name=name: p.dataplane_ready(name) and any(
                        s["id"] == sid and s.get("routes") for s in p.dataplane_config(name).get("services", [])),
                        what=f"agent-{name}'s data plane to carry the service")
                p.sid = sid  # type: ignore[attr-defined]
                yield p
            finally:
                server.sock.close()


def scrape(pair: ArcticPair, name: str) -> dict[tuple[str, tuple], float]:
    resp = http(pair.t.ctl, "GET", f"{pair.agents[name].url}/metrics",
                headers={"Authorization": f"Bearer {pair.token(name)}"})
    assert resp.status_code == 200, resp.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float:
    found = [v for (n, lab), v in samples.items() if n == name and labels.items() <= dict(lab).items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def settled(pair: ArcticPair, name: str) -> dict:
    """A scrape taken once every data-plane worker of agent-``name`` has reported after now."""
    pair.fresh_stats(name)
    return scrape(pair, name)


def test_traffic_moves_exactly_the_counters_it_should_on_both_peers(pair):
    service = {"service_id": pair.sid, "service_name": "web"}
    before = {name: settled(pair, name) for name in ("a", "b")}
    assert exchange(pair.t.cl) == REPLY
    after = {name: settled(pair, name) for name in ("a", "b")}

    def delta(name: str, metric_name: str, **labels: str) -> float:
        return metric(after[name], metric_name, **service, **labels) - metric(before[name], metric_name, **service,
                                                                               **labels)

    # the source peer: the client's bytes went into the tunnel, the server's came back out of it
    assert delta("a", "arctic_service_streams_opened_total", role="source") == 1
    assert delta("a", "arctic_service_transmit_bytes_total", role="source") == UPLOAD
    assert delta("a", "arctic_service_receive_bytes_total", role="source") == REPLY
    # the target peer: the mirror image
    assert delta("b", "arctic_service_streams_opened_total", role="target") == 1
    assert delta("b", "arctic_service_transmit_bytes_total", role="target") == REPLY
    assert delta("b", "arctic_service_receive_bytes_total", role="target") == UPLOAD
    assert metric(after["a"], "arctic_service_streams_open", **service) == 0
    assert metric(after["a"], "arctic_peer_up", peer_name="agent-b") == 1
    assert metric(after["a"], "arctic_service_last_stream_timestamp_seconds", **service) >= time.time() - 60
    for name in ("a", "b"):  # the reconcile runs that set the service up were counted, without failures
        assert metric(after[name], "arctic_reconcile_runs_total", section="kernel") >= 1
        assert metric(after[name], "arctic_reconcile_failures_total", section="kernel") == 0
        assert metric(after[name], "arctic_dataplane_up") == 1


def test_a_refused_connection_increments_its_reason(pair):
    before = settled(pair, "a")
    assert refused(pair.t.cl, S1, CLOSED_PORT)  # in the route, but nothing listens on s1's port
    after = settled(pair, "a")
    reason = {"service_id": pair.sid, "reason": "target_connect_failed"}
    assert metric(after, "arctic_service_refused_total", **reason) - metric(
        before, "arctic_service_refused_total", **reason) == 1


def test_any_agent_shows_a_service_s_live_counters_as_its_source_peer_counts_them(pair):
    pair.fresh_stats("a")
    from_source = pair.api("GET", f"/v1/services/{pair.sid}", on="a")["traffic"]
    from_target = pair.api("GET", f"/v1/services/{pair.sid}", on="b")["traffic"]
    assert from_source["observed_by"] == from_target["observed_by"] == pair.peer_id("a")
    assert from_target["connections_total"] == from_source["connections_total"] >= 1
    assert from_target["bytes_sent"] >= UPLOAD and from_target["last_connection_at"]
    listed = {s["id"]: s for s in pair.api("GET", "/v1/services", on="b")}
    assert listed[pair.sid]["traffic"]["connections_total"] == from_source["connections_total"]


def test_cardinality_stays_flat_when_a_thousand_connections_from_different_ports_go_through(pair):
    exchange(pair.t.cl, upload=1)  # every series of the service exists before the count
    series = {name: set(settled(pair, name)) for name in ("a", "b")}
    def thousand() -> list[int]:  # in the client's namespace: threads made there live there too
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(lambda _: exchange_here(upload=100), range(1000)))
    answered = pair.t.cl.call(thousand, timeout=300)
    assert answered == [REPLY] * 1000
    for name in ("a", "b"):
        now = set(settled(pair, name))
        assert now == series[name], f"agent-{name}: new series {sorted(now - series[name])[:5]}"


# --- a real Prometheus -----------------------------------------------------------------------------------------

def prometheus_config(pair: ArcticPair, run_dir: Path) -> Path:
    """Scrape both agents every second with Prometheus's own OAuth2 client; evaluate the shipped rules every second,
    their ``for:`` shortened so the test waits seconds, not minutes."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    (run_dir / "rules.yml").write_text(yaml.safe_dump(rules))
    secret = run_dir / "client-secret"
    secret.write_text(pair.creds["a"]["client_secret"])
    job = {"job_name": "arctic", "scrape_interval": "1s", "scrape_timeout": "900ms",
           # one cluster credential: a token agent-a issues is valid on every peer
           "oauth2": {"client_id": pair.creds["a"]["client_id"], "client_secret_file": str(secret),
                      "token_url": f"{pair.agents['a'].url}/v1/oauth/token"},
           "static_configs": [{"targets": [agent.url.split("//", 1)[1] for agent in pair.agents.values()]}]}
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(run_dir / "rules.yml")], "scrape_configs": [job]}
    path = run_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def promql(pair: ArcticPair, query: str) -> list[dict]:
    resp = http(pair.t.ctl, "GET", f"http://{PROMETHEUS}/api/v1/query", params={"query": query})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["result"]


def firing(pair: ArcticPair, alertname: str) -> list[dict]:
    resp = http(pair.t.ctl, "GET", f"http://{PROMETHEUS}/api/v1/alerts")
    return [a for a in resp.json()["data"]["alerts"] if a["labels"]["alertname"] == alertname
            and a["state"] == "firing"]


@pytest.fixture
def prometheus(pair: ArcticPair) -> Iterator[None]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the Debian package prometheus is not installed (make test installs it)")
    run_dir = pair.t.lab.run_dir / "prometheus"
    run_dir.mkdir()
    log = (run_dir / "log").open("w")
    proc = pair.t.ctl.popen(binary, f"--config.file={prometheus_config(pair, run_dir)}",
                            f"--storage.tsdb.path={run_dir / 'data'}", f"--web.listen-address={PROMETHEUS}",
                            stdout=log, stderr=log)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(run_dir / 'log').read_text()[-2000:]}")
            try:
                return len(promql(pair, 'up{job="arctic"} == 1')) == 2
            except OSError:  # not listening yet
                return False
        wait_until(up, timeout=60, what="Prometheus to scrape both agents")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_prometheus_reads_a_service_s_byte_rate_and_alerts_when_a_peer_stops(pair, prometheus):
    query = f'sum(rate(arctic_service_transmit_bytes_total{{service_id="{pair.sid}",role="source"}}[5s]))'
    done = threading.Event()
    flow = threading.Thread(target=lambda: (exchange(pair.t.cl, upload=8 << 20, pace=0.02), done.set()),
                            daemon=True)
    flow.start()  # about 1.6 MB/s for 5 s: a rate Prometheus sees while the connection is still open
    rate = wait_until(lambda: (r := promql(pair, query)) and float(r[0]["value"][1]) > 100_000 and r,
                      timeout=30, what="Prometheus to see the service's byte rate")
    assert float(rate[0]["value"][1]) > 100_000
    flow.join(timeout=60)
    assert done.is_set()
    assert not firing(pair, "ArcticPeerUnreachable")
    pair.agents["b"].stop()
    try:
        alerts = wait_until(lambda: firing(pair, "ArcticPeerUnreachable"), timeout=60,
                            what="the peer-unreachable alert to fire")
        assert {a["labels"].get("peer_name") for a in alerts} == {"agent-b"}
    finally:
        pair.agents["b"].restart()
