"""GET /metrics and a service's live traffic counters, in process (the lab tests carry real traffic).

The data plane's counters are given as a stats document shaped like the one it writes (``arctic.dataplane.stats``);
``tests/lab/test_metrics_and_traffic.py`` shows the same with real connections and a real Prometheus.
"""

from __future__ import annotations

import time

import pytest
from arctic.config import ConfigError, parse_config
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, keyed by name and sorted labels (parsed with the client library's parser)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [v for (n, lab), v in samples(text).items() if n == name and labels.items() <= dict(lab).items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def stats_document(service_id: str, peer_id: str, **counters) -> dict:
    service = {"source": 7, "target": 0, "active": 2, "bytes_to_tunnel": 5000, "bytes_from_tunnel": 9000,
               "last_stream_at": 1_700_000_000, "rate_to_tunnel": 125.0, "rate_from_tunnel": 250.0,
               "refused": {"no_route": 3, "target_refused": 1}} | counters
    return {"updated_at": time.time(), "started_at": 1_690_000_000.0, "services": {service_id: service},
            "peers": {peer_id: {"sessions": 2, "sessions_up": 1, "streams": 2, "streams_total": 7, "reconnects": 4,
                                "rtt_ms": 1.5, "state": "up"}},
            "workers_running": 2, "worker_restarts": 1}


@pytest.fixture
def counted(api, peer_b):
    """A service from this peer to peer_b and a data plane that counted traffic for it."""
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "name": "web"}).get_json()
    doc = stats_document(svc["id"], peer_b)
    api.runtime.dataplane_stats = lambda: doc
    return svc


def test_metrics_parse_and_carry_the_service_counters_with_their_labels(api, peer_b, counted):
    resp = api.client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    labels = {"service_id": counted["id"], "service_name": "web", "source_peer": "agent-a",
              "target_peer": "agent-b", "transport": "tcp", "role": "source"}
    assert value(text, "arctic_service_streams_opened_total", **labels) == 7
    assert value(text, "arctic_service_streams_open", **labels) == 2
    assert value(text, "arctic_service_transmit_bytes_total", **labels) == 5000
    assert value(text, "arctic_service_receive_bytes_total", **labels) == 9000
    assert value(text, "arctic_service_refused_total", reason="no_route", **labels) == 3
    assert value(text, "arctic_service_refused_total", reason="target_refused", **labels) == 1
    assert value(text, "arctic_service_refused_total", reason="setup_timeout", **labels) == 0  # exported before
    assert value(text, "arctic_service_shaping_dropped_packets_total", **labels) == 0
    assert value(text, "arctic_service_last_stream_timestamp_seconds", **labels) == 1_700_000_000


def test_every_exported_series_is_in_the_contract_the_alerting_rules_are_checked_against(api, peer_b, counted):
    """``tests/test_alert_rules.py`` checks the shipped rules against ``EXPORTED``; this checks the agent against it,
    so a metric renamed on either side fails a test."""
    from test_alert_rules import EXPORTED, TARGET_LABELS

    api.runtime.db.read().execute("INSERT INTO peer_health (peer_id, reachable, last_seen, failures, next_attempt)"
                                  " VALUES (?, 1, '2026-01-01T00:00:00Z', 0, 0)", (peer_b,))
    api.runtime.reconcile_worker = FakeReconcileWorker()
    exported = {}
    for (name, labels), _ in samples(api.client.get("/metrics").get_data(as_text=True)).items():
        if not name.endswith("_created"):  # the client library's creation timestamps of counters
            exported.setdefault(name, set()).update(key for key, _ in labels)
    contract = {name: labels for name, labels in EXPORTED.items() if name != "up"}
    assert exported.keys() == contract.keys()
    for name, labels in exported.items():
        assert labels == contract[name] and not labels & TARGET_LABELS, name


class FakeReconcileWorker:
    """What the collector reads of the reconcile worker: its metrics and its shaping drops."""

    def __init__(self) -> None:
        from arctic.daemon.reconcile import ReconcileMetrics

        self.metrics = ReconcileMetrics()
        self.metrics.succeeded(1_700_000_000.0)
        self.qos = self

    @staticmethod
    def drops() -> dict[str, int]:
        return {}


def test_metrics_carry_peer_sessions_licence_and_data_plane(api, peer_b, counted):
    text = api.client.get("/metrics").get_data(as_text=True)
    peer = {"peer_id": peer_b, "peer_name": "agent-b"}
    assert value(text, "arctic_peer_up", **peer) == 1
    assert value(text, "arctic_peer_sessions", state="up", **peer) == 1
    assert value(text, "arctic_peer_sessions", state="connecting", **peer) == 1
    assert value(text, "arctic_peer_rtt_seconds", **peer) == pytest.approx(0.0015)
    assert value(text, "arctic_peer_reconnects_total", **peer) == 4
    assert value(text, "arctic_license_state", state="valid") == 1
    assert value(text, "arctic_license_state", state="grace") == 0
    assert value(text, "arctic_license_remaining_seconds") > 86400
    assert value(text, "arctic_dataplane_up") == 1
    assert value(text, "arctic_dataplane_workers") == 2
    assert value(text, "arctic_dataplane_worker_restarts_total") == 1
    assert value(text, "arctic_agent_info", peer_id=api.local_peer_id, peer_name="agent-a") == 1


def test_gossip_reachability_and_last_seen_age_are_exported_per_peer(api, peer_b):
    api.runtime.db.read().execute(
        "INSERT INTO peer_health (peer_id, reachable, last_seen, failures, next_attempt) VALUES (?, 0, ?, 3, 0)",
        (peer_b, "2020-01-01T00:00:00Z"))
    text = api.client.get("/metrics").get_data(as_text=True)
    assert value(text, "arctic_peer_reachable", peer_id=peer_b) == 0
    assert value(text, "arctic_peer_last_seen_age_seconds", peer_id=peer_b) > 365 * 86400


def test_stale_data_plane_counters_are_not_exported_as_live(api, peer_b, counted):
    doc = stats_document(counted["id"], peer_b) | {"updated_at": time.time() - 60}
    api.runtime.dataplane_stats = lambda: doc
    text = api.client.get("/metrics").get_data(as_text=True)
    assert value(text, "arctic_dataplane_up") == 0
    assert value(text, "arctic_service_transmit_bytes_total", service_id=counted["id"]) == 0
    assert api.get(f"/v1/services/{counted['id']}").get_json()["traffic"] is None


def test_an_agent_without_a_licence_or_store_content_still_answers_metrics(fresh_api):
    resp = fresh_api.client.get("/metrics")
    assert resp.status_code == 200
    assert value(resp.get_data(as_text=True), "arctic_license_state", state="none") == 1


@pytest.mark.parametrize(("mode", "remote", "status"), [
    ("loopback", "127.0.0.1", 200), ("loopback", "::1", 200), ("loopback", "192.0.2.7", 401),
    ("token", "127.0.0.1", 401), ("token", "192.0.2.7", 401), ("off", "192.0.2.7", 200),
])
def test_metrics_access_follows_metrics_auth(fresh_api, issuer, mode, remote, status):
    api = fresh_api
    api.runtime.config = parse_config({"data_dir": str(api.data_dir), "metrics": {"auth": mode},
                                       "license": {"issuer_public_keys": [issuer.public_b64]}}, env={})
    api.bootstrap()
    resp = api.client.get("/metrics", environ_base={"REMOTE_ADDR": remote})
    assert resp.status_code == status
    if status == 401:
        assert "Bearer" in resp.get_json()["error"]
        with_token = api.client.get("/metrics", environ_base={"REMOTE_ADDR": remote}, headers=api.headers())
        assert with_token.status_code == 200


def test_a_token_without_services_read_is_refused_metrics(fresh_api, issuer):
    api = fresh_api
    api.runtime.config = parse_config({"data_dir": str(api.data_dir), "metrics": {"auth": "token"},
                                       "license": {"issuer_public_keys": [issuer.public_b64]}}, env={})
    api.bootstrap()
    cred = api.post("/v1/credentials", json={"scopes": ["peers.read"]}).get_json()
    token = api.token_for(cred["client_id"], cred["client_secret"])
    assert api.client.get("/metrics", headers=api.headers(token)).status_code == 403


@pytest.mark.parametrize("metrics", [{"auth": "bearer"}, {"auth": True}, {"port": 9100}, "open"])
def test_a_bad_metrics_setting_is_refused_by_name(metrics):
    with pytest.raises(ConfigError, match="metrics: only 'auth'"):
        parse_config({"metrics": metrics}, env={})


def test_a_service_shows_its_live_traffic_counters(api, counted):
    traffic = api.get(f"/v1/services/{counted['id']}").get_json()["traffic"]
    assert traffic == {
        "observed_by": api.local_peer_id, "counting_since": "2023-07-22T04:26:40Z",
        "connections_total": 7, "connections_open": 2, "bytes_sent": 5000, "bytes_received": 9000,
        "throughput_sent_bps": 1000, "throughput_received_bps": 2000,
        "refused": {"no_route": 3, "target_refused": 1}, "refused_total": 4,
        "last_connection_at": "2023-11-14T22:13:20Z",
    }
    assert api.get("/v1/services").get_json()[0]["traffic"] == traffic


def test_without_a_data_plane_a_service_has_no_traffic_counters(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()
    assert svc["traffic"] is None
    assert api.get(f"/v1/services/{svc['id']}").get_json()["traffic"] is None


def test_the_traffic_of_another_peers_service_is_asked_of_its_source_peer(api, peer_b, monkeypatch):
    from arctic.api import observations
    from arctic.store import repository as repo

    svc = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()
    with api.runtime.db.write() as tx:  # the same service, as if peer_b were its source (this peer its target)
        tx.execute("UPDATE services SET source_peer_id = ?, target_peer_id = ? WHERE id = ?",
                   (peer_b, api.local_peer_id, svc["id"]))
    assert repo.get_service(api.runtime.db.read(), svc["id"]).source_peer_id == peer_b
    theirs = {"observed_by": peer_b, "connections_total": 12}
    asked = []

    class Answer:
        status_code = 200

        @staticmethod
        def json():
            return [{"id": svc["id"], "traffic": theirs}]

    def fake_raw(address, method, path, *, headers, data, params, timeout):
        asked.append((method, path, params))
        return Answer()

    monkeypatch.setattr(observations.transport, "raw", fake_raw)
    assert api.get(f"/v1/services/{svc['id']}").get_json()["traffic"] == theirs
    assert asked == [("GET", "/v1/services", {"source_peer_id": peer_b})]


def test_a_reconcile_section_that_reports_an_error_or_raises_counts_as_a_failure():
    from arctic.daemon.reconcile import ReconcileMetrics, RunReport

    metrics, report = ReconcileMetrics(), RunReport(reason="test", started_at=0.0)
    with metrics.section("kernel", report):
        pass
    with metrics.section("shaping", report):
        report.errors.append("shaping: tc refused")
    with pytest.raises(RuntimeError), metrics.section("dataplane", report):
        raise RuntimeError("disk full")
    got = {(s.name, s.labels.get("section")): s.value for m in metrics.collect() for s in m.samples}
    assert [got[("arctic_reconcile_runs_total", s)] for s in ReconcileMetrics.SECTIONS] == [1, 1, 1]
    assert [got[("arctic_reconcile_failures_total", s)] for s in ReconcileMetrics.SECTIONS] == [0, 1, 1]
    assert got[("arctic_reconcile_duration_seconds_count", "kernel")] == 1
