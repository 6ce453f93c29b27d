"""The reconciler repairs what went wrong on its own: a failed kernel call, and shaping changed by hand.

Topology ``harness.transit`` with two real agents. agent-a runs with ``tests/lab/nft_fails_once/nft`` first in its
PATH: a stand-in that fails the first ``nft -f`` after the test creates a marker file, as a busy kernel would, and is
the real nft otherwise. Periodic drift runs come every 30 s (``ArcticPair``'s default), so anything repaired here
within a few seconds was repaired by the run the worker scheduled itself, or by the one the test asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Lab, root_namespace_untouched, transit
from harness.agents import agent_binary
from harness.arcticlab import ArcticPair, wait_until

pytestmark = pytest.mark.lab

WRAPPER_DIR = Path(__file__).resolve().parent / "nft_fails_once"
B_IP = "198.18.0.2"


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[tuple[ArcticPair, Path]]:
    real_nft = shutil.which("nft")
    if real_nft is None:
        pytest.skip("nft is not installed")
    with root_namespace_untouched("the reconcile repair tests"), Lab(prefix="arfix") as lab:
        t = transit(lab)
        marker = lab.run_dir / "nft-fail-once"
        command = ["env", f"PATH={WRAPPER_DIR}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
                   f"ARCTIC_TEST_NFT_FAIL_ONCE={marker}", f"ARCTIC_TEST_REAL_NFT={real_nft}",
                   agent_binary(), "run", "--config", "{config}"]
        with ArcticPair.start(t, extra_config={"log_level": "info"}, commands={"a": command}) as pair:
            yield pair, marker


@pytest.fixture
def pair(lab_dir) -> Iterator[ArcticPair]:
    pair, _ = lab_dir
    yield pair
    pair.delete_services()
    wait_until(lambda: not pair.nft_table("a") and not pair.dataplane_config("a").get("services"),
               what="agent-a to be clean")


def reconciled_lines(pair: ArcticPair) -> list[dict]:
    """agent-a's "reconciled" log records (JSON lines), oldest first."""
    out = []
    for line in pair.agents["a"].log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("msg") == "reconciled":
            out.append(record)
    return out


def in_sync(pair: ArcticPair) -> bool:
    return pair.api("GET", "/v1/plan")["in_sync"]


def unconverged(pair: ArcticPair) -> list[str]:
    """Log lines of either agent's convergence self-check: a second plan right after an apply was not empty."""
    return [ln for agent in pair.agents.values() for ln in agent.log_text().splitlines() if "not converged" in ln]


def test_a_failed_nft_transaction_is_retried_within_seconds_without_a_new_request(lab_dir, pair):
    _, marker = lab_dir
    sid = pair.create_service(target_peer_id=pair.peer_id("b"))
    wait_until(lambda: in_sync(pair), what="agent-a to have applied the new service")
    marker.touch()  # the next `nft -f` of agent-a fails, once
    pair.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})

    wait_until(lambda: "192.168.100.0/24" in pair.nft_table("a"), timeout=10,
               what="the route in agent-a's nft table, well before the 30 s periodic run")
    assert not marker.exists(), "the stand-in nft did fail a transaction"

    def retried() -> list[dict]:  # the run's log line comes once the run has ended, after the table
        return [r for r in reconciled_lines(pair) if r.get("reason", "").startswith("retry after a temporary failure")
                and any("table inet arctic replaced" in a for a in r.get("actions", []))]

    log = pair.agents["a"].log_text
    try:
        wait_until(retried, timeout=10, what="the log line of the retry that replaced the table")
    except TimeoutError:
        pytest.fail("the table was not replaced by the retry the worker scheduled itself:\n"
                    + "\n".join(ln for ln in log().splitlines() if "reconcil" in ln or "nft" in ln))
    assert "temporary failure; reconciling again soon" in log()
    wait_until(lambda: in_sync(pair), what="agent-a in sync after the retry")
    assert unconverged(pair) == []


def class_line(pair: ArcticPair, dev: str, minor: int) -> str:
    return pair.t.agent_a.run("tc", "class", "show", "dev", dev, "classid", f"61:{minor:x}").stdout


def test_a_tc_class_changed_by_hand_shows_as_drift_and_the_next_reconcile_repairs_it(pair):
    sid = pair.create_service(target_peer_id=pair.peer_id("b"), bandwidth_limit_mbps=50)
    wait_until(lambda: in_sync(pair), what="agent-a to shape the new service")
    dev = json.loads(pair.t.agent_a.run("ip", "-j", "route", "get", B_IP).stdout)[0]["dev"]
    service = next(s for s in pair.dataplane_config("a")["services"] if s["id"] == sid)
    base = service["so_priorities"][0] & 0xFFFF & ~31  # the service class of its block (61:<base>)
    assert "rate 50Mbit ceil 50Mbit" in class_line(pair, dev, base)

    pair.t.agent_a.run("tc", "class", "change", "dev", dev, "parent", "61:", "classid", f"61:{base:x}", "htb",
                       "rate", "30mbit", "ceil", "30mbit")
    assert "rate 30Mbit ceil 30Mbit" in class_line(pair, dev, base)
    shown = pair.api("GET", "/v1/plan")
    assert not shown["in_sync"] and shown["changes"]["qos"]
    assert f"-shape {sid} towards {B_IP}: 30 Mbit/s each way" in shown["diff"]
    assert f"+shape {sid} towards {B_IP}: 50 Mbit/s each way\n" in shown["diff"]
    assert "qos: tc classes were changed outside Arctic" in shown["drift"]

    synced = {p["peer_id"]: p for p in pair.api("POST", "/v1/cluster/sync", json={}, timeout=60)["peers"]}
    assert synced[pair.peer_id("a")]["reconciled"], synced
    assert "rate 50Mbit ceil 50Mbit" in class_line(pair, dev, base), "the run repaired the class"
    shown = pair.api("GET", "/v1/plan")
    assert shown["in_sync"] and not shown["changes"]["qos"] and not shown["drift"], shown
    assert unconverged(pair) == [], "every apply, the repair too, read back as rendered"
