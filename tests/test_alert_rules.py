"""The Prometheus alerting rules shipped in ``packaging/prometheus``: valid, unit-tested, and written against the
metrics the agent's ``/metrics`` really exports.

``promtool`` (Debian package ``prometheus``, installed by ``make deps``) checks the rules and runs their unit tests
(``arctic.rules.test.yml``). Without it these two tests are skipped, which ``make test`` (``ARCTIC_NO_SKIPS=1``)
reports as a failure. ``EXPORTED`` below is the contract with the exporter: an expression or an annotation query
that uses a metric or label the agent does not export (a renamed metric, a typo) fails here, not at 3 a.m.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[1] / "packaging" / "prometheus"
RULES = RULES_DIR / "arctic.rules.yml"
RULE_TESTS = RULES_DIR / "arctic.rules.test.yml"

_SERVICE = {"service_id", "service_name", "source_peer", "target_peer", "transport", "role"}
_PEER = {"peer_id", "peer_name"}

# Metric name -> its own labels (Prometheus adds ``instance`` and ``job`` to all of them).
EXPORTED: dict[str, set[str]] = {
    "arctic_service_streams_opened_total": _SERVICE,
    "arctic_service_streams_open": _SERVICE,
    "arctic_service_refused_total": _SERVICE | {"reason"},
    "arctic_service_transmit_bytes_total": _SERVICE,
    "arctic_service_receive_bytes_total": _SERVICE,
    "arctic_service_shaping_dropped_packets_total": _SERVICE,
    "arctic_service_last_stream_timestamp_seconds": _SERVICE,
    "arctic_peer_up": _PEER,
    "arctic_peer_sessions": _PEER | {"state"},
    "arctic_peer_rtt_seconds": _PEER,
    "arctic_peer_reconnects_total": _PEER,
    "arctic_peer_reachable": _PEER,
    "arctic_peer_last_seen_age_seconds": _PEER,
    "arctic_reconcile_runs_total": {"section"},
    "arctic_reconcile_failures_total": {"section"},
    "arctic_reconcile_duration_seconds_bucket": {"section", "le"},
    "arctic_reconcile_duration_seconds_sum": {"section"},
    "arctic_reconcile_duration_seconds_count": {"section"},
    "arctic_reconcile_last_success_timestamp_seconds": set(),
    "arctic_license_state": {"state"},
    "arctic_license_remaining_seconds": set(),
    "arctic_dataplane_up": set(),
    "arctic_dataplane_workers": set(),
    "arctic_dataplane_worker_restarts_total": set(),
    "arctic_agent_info": _PEER | {"version"},
    "up": set(),  # Prometheus's own, per scrape target
}
TARGET_LABELS = {"instance", "job"}
SEVERITIES = {"warning", "critical"}
REQUIRED_ALERTS = {
    "ArcticAgentDown", "ArcticPeerUnreachable", "ArcticSessionFlapping", "ArcticRefusalsRising",
    "ArcticReconcileFailing", "ArcticLicenseExpiringSoon", "ArcticLicenseGraceOrWorse", "ArcticDataplaneDown",
    "ArcticDataplaneWorkerRestarts",
}

# PromQL words that are not metric names: keywords, and aggregations/functions (always followed by "(" once the
# grouping clauses are removed, but listed for the few written without one).
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "atan2", "inf", "nan", "start", "end"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_TEMPLATE_QUERY = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"')
_TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, grouping clauses, strings, ranges and
    function names left out). An unknown word counts as a metric name, so a mistake fails rather than hides."""
    text = _STRING.sub('""', _GROUPING.sub(" ", expr))
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    return {name for name, call in _IDENT.findall(text) if not call and name.lower() not in _KEYWORDS}


def matcher_labels(expr: str) -> list[tuple[str | None, str]]:
    """(metric name or None, label) for every label matcher in a selector."""
    return [(name or None, label) for name, body in _SELECTOR.findall(expr) for label, _ in _MATCHER.findall(body)]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    return {label.strip() for _, body in _GROUPING.findall(expr) for label in body.split(",") if label.strip()}


def _alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=RULES_DIR.parents[1], capture_output=True, text=True,
                          timeout=120)


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (Debian package prometheus; make deps)")


@needs_promtool
def test_promtool_check_rules():
    result = _promtool("check", "rules", str(RULES.relative_to(RULES_DIR.parents[1])))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


@needs_promtool
def test_promtool_unit_tests():
    result = _promtool("test", "rules", str(RULE_TESTS.relative_to(RULES_DIR.parents[1])))
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout, result.stdout


def test_rules_are_one_group_with_the_required_alerts():
    doc = yaml.safe_load(RULES.read_text())
    assert [g["name"] for g in doc["groups"]] == ["arctic"]
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert set(names) >= REQUIRED_ALERTS, f"missing: {sorted(REQUIRED_ALERTS - set(names))}"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_is_complete(rule):
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "every alert needs a `for:`"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description")


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_exported_metrics_and_labels(rule):
    """The contract: every metric and label an expression or an annotation's query uses is one the agent exports."""
    annotations = " ".join(str(v) for v in rule.get("annotations", {}).values())
    queries = [rule["expr"], *(q.replace("%q", '""') for q in _TEMPLATE_QUERY.findall(annotations))]
    used = set().union(*(metric_names(q) for q in queries))
    unknown = used - EXPORTED.keys()
    assert not unknown, f"{rule['alert']} uses metrics /metrics does not export: {sorted(unknown)}"
    assert metric_names(rule["expr"]), f"{rule['alert']}: no metric found in its expression"

    for query in queries:
        for metric, label in matcher_labels(query):
            allowed = (EXPORTED[metric] if metric in EXPORTED else set().union(*EXPORTED.values())) | TARGET_LABELS
            assert label in allowed, f"{rule['alert']}: {metric or 'selector'} has no label {label!r}"
    available = set().union(*(EXPORTED[m] for m in used)) | TARGET_LABELS
    named = grouping_labels(rule["expr"]) | set(_TEMPLATE_LABEL.findall(annotations))
    assert named <= available, f"{rule['alert']}: labels its metrics do not have: {sorted(named - available)}"


def test_metric_name_extraction():
    """The checker itself: names found, PromQL syntax not mistaken for names, an unknown word reported."""
    expr = ('sum by (job, service_id) (increase(arctic_service_refused_total{reason=~"no_route|limit"}[5m])) > 1e3'
            ' and on (instance) max without (peer_name) (arctic_peer_up offset 5m) == bool 1'
            ' or time() - arctic_reconcile_last_success_timestamp_seconds > 14 * 86400'
            ' unless up{job="arctic"} * on (instance) group_left (version) arctic_agent_info')
    assert metric_names(expr) == {"arctic_service_refused_total", "arctic_peer_up",
                                  "arctic_reconcile_last_success_timestamp_seconds", "up", "arctic_agent_info"}
    assert matcher_labels(expr) == [("arctic_service_refused_total", "reason"), ("up", "job")]
    assert grouping_labels(expr) == {"job", "service_id", "instance", "peer_name", "version"}
    assert metric_names("rate(arctic_service_refused[5m]) > 0") == {"arctic_service_refused"}  # -> not exported
