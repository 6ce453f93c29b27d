"""Licence documents: issuing, verification, the expiry state machine, and the issuer CLI."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta, timezone

import pytest
from arctic.cluster.licence import (
    GRACE_PERIOD,
    READ_ONLY_PERIOD,
    WARNING_WINDOW,
    LicenceError,
    canonical_bytes,
    check_not_expired_for_bootstrap,
    generate_issuer_key,
    issue_licence,
    licence_state,
    same_customer,
    verify_licence,
)
from arctic.daemon.license_cmd import license_group
from arctic.timeutil import parse_rfc3339, to_cli, to_rfc3339, utcnow
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import load_pem_private_key

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def issuer() -> tuple[bytes, str]:
    return generate_issuer_key()


@pytest.fixture(scope="module")
def other_issuer() -> tuple[bytes, str]:
    return generate_issuer_key()


def _licence(issuer, **overrides) -> dict:
    params = {"customer_id": "cust_acme", "max_nodes": 10, "max_services": 100, "issued_at": ISSUED,
              "expires_at": EXPIRES}
    params.update(overrides)
    return issue_licence(issuer[0], **params)


def _resign(doc: dict, issuer) -> dict:
    """Sign ``doc`` as it stands (for shape checks that must not be masked by a bad signature)."""
    key = load_pem_private_key(issuer[0], password=None)
    return doc | {"signature": base64.b64encode(key.sign(canonical_bytes(doc))).decode()}


def _invalid(doc, keys) -> str:
    with pytest.raises(LicenceError) as info:
        verify_licence(doc, keys)
    assert info.value.code == "LICENSE_INVALID"
    return info.value.message


# -- issuing and verifying ------------------------------------------------------------------------

def test_issued_licence_has_the_documented_fields_and_verifies(issuer):
    doc = _licence(issuer)
    assert set(doc) == {"customer_id", "license_id", "issued_at", "expires_at", "max_nodes", "max_services",
                        "features", "signature"}
    assert doc["license_id"].startswith("lic_") and doc["issued_at"] == "2026-01-01T00:00:00Z"
    assert doc["features"] == ["tcp", "kcp", "qos", "transparent"]
    lic = verify_licence(doc, [issuer[1]])
    assert (lic.customer_id, lic.max_nodes, lic.max_services) == ("cust_acme", 10, 100)
    assert lic.issued_at == ISSUED and lic.expires_at == EXPIRES and lic.expires_at.tzinfo is not None
    assert lic.raw == doc and lic.raw is not doc


def test_issuer_public_key_is_44_char_base64_of_raw_32_bytes(issuer):
    assert len(issuer[1]) == 44 and issuer[1].endswith("=")
    assert issuer[0].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_valid_days_counts_from_issued_at_and_accepts_rfc3339_strings(issuer):
    doc = _licence(issuer, expires_at=None, valid_days=365, issued_at="2026-01-01T02:00:00+02:00")
    assert doc["issued_at"] == "2026-01-01T00:00:00Z" and doc["expires_at"] == "2027-01-01T00:00:00Z"


def test_explicit_expiry_overrides_a_default_duration(issuer):
    assert _licence(issuer, valid_days=30)["expires_at"] == "2027-01-01T00:00:00Z"


def test_issue_needs_an_expiry_and_refuses_bad_values(issuer):
    with pytest.raises(ValueError, match="valid_days or expires_at"):
        _licence(issuer, expires_at=None)
    with pytest.raises(ValueError, match="valid_days must be"):
        _licence(issuer, expires_at=None, valid_days=0)
    with pytest.raises(ValueError, match="max_nodes must be at least 1"):
        _licence(issuer, max_nodes=0)
    with pytest.raises(ValueError, match="cust_"):
        _licence(issuer, customer_id="acme")
    with pytest.raises(ValueError, match="must be after issued_at"):
        _licence(issuer, expires_at=ISSUED)


@pytest.mark.parametrize("field, value", [
    ("max_services", 5000), ("max_nodes", 11), ("customer_id", "cust_other"),
    ("expires_at", "2030-01-01T00:00:00Z"), ("features", ["tcp"]), ("license_id", "lic_OTHER"),
])
def test_any_tampered_field_makes_the_signature_invalid(issuer, field, value):
    message = _invalid(_licence(issuer) | {field: value}, [issuer[1]])
    assert "signature does not verify against any trusted issuer key" in message
    assert "license.issuer_public_keys" in message


def test_added_field_after_signing_is_invalid(issuer):
    _invalid(_licence(issuer) | {"max_peers_bonus": 1}, [issuer[1]])


def test_unknown_signed_fields_are_covered_and_preserved(issuer):
    doc = _licence(issuer, extra={"tier": "gold", "support": {"level": 2}})
    lic = verify_licence(doc, [issuer[1]])
    assert lic.raw["tier"] == "gold" and lic.raw["support"] == {"level": 2}
    _invalid(doc | {"tier": "platinum"}, [issuer[1]])


def test_licence_from_another_issuer_is_invalid(issuer, other_issuer):
    _invalid(_licence(other_issuer), [issuer[1]])


def test_any_configured_issuer_key_may_have_signed(issuer, other_issuer):
    assert verify_licence(_licence(other_issuer), [issuer[1], other_issuer[1]]).customer_id == "cust_acme"


def test_no_usable_issuer_key_says_to_configure_one(issuer):
    assert "license.issuer_public_keys" in _invalid(_licence(issuer), [])
    message = _invalid(_licence(issuer), ["not-base64!"])
    assert "malformed" in message


def test_malformed_issuer_keys_are_ignored_when_a_good_one_verifies(issuer):
    assert verify_licence(_licence(issuer), ["garbage", issuer[1]]).license_id


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("max_nodes"), "missing required field(s): max_nodes"),
    (lambda d: d.update(max_nodes="10"), "max_nodes must be an integer"),
    (lambda d: d.update(max_services=True), "max_services must be an integer"),
    (lambda d: d.update(max_nodes=0), "max_nodes must be at least 1"),
    (lambda d: d.update(max_services=-1), "max_services must be 0 or more"),
    (lambda d: d.update(customer_id="acme"), "expected cust_"),
    (lambda d: d.update(license_id="01HXYZ"), "expected lic_"),
    (lambda d: d.update(expires_at="next year"), "expires_at"),
    (lambda d: d.update(expires_at=d["issued_at"]), "must be after issued_at"),
    (lambda d: d.update(features="tcp"), "features must be a list"),
])
def test_bad_shapes_are_invalid_with_a_message_naming_the_field(issuer, mutate, expected):
    doc = {k: v for k, v in _licence(issuer).items() if k != "signature"}
    mutate(doc)
    assert expected in _invalid(_resign(doc, issuer), [issuer[1]])


def test_missing_or_malformed_signature_is_invalid(issuer):
    doc = _licence(issuer)
    assert "no signature" in _invalid({k: v for k, v in doc.items() if k != "signature"}, [issuer[1]])
    assert "base64" in _invalid(doc | {"signature": "%%%"}, [issuer[1]])
    assert "JSON object" in _invalid(["not", "a", "dict"], [issuer[1]])


def test_licence_without_features_verifies_with_none(issuer):
    doc = {k: v for k, v in _licence(issuer).items() if k not in ("signature", "features")}
    assert verify_licence(_resign(doc, issuer), [issuer[1]]).features == ()


def test_same_customer_compares_customer_ids(issuer):
    a, b = verify_licence(_licence(issuer), [issuer[1]]), verify_licence(_licence(issuer), [issuer[1]])
    c = verify_licence(_licence(issuer, customer_id="cust_other"), [issuer[1]])
    assert a.license_id != b.license_id and same_customer(a, b) and not same_customer(a, c)


# -- the expiry state machine ---------------------------------------------------------------------

def _state_at(issuer, delta_from_expiry: timedelta):
    lic = verify_licence(_licence(issuer), [issuer[1]])
    return licence_state(lic, EXPIRES + delta_from_expiry)


def test_period_constants_match_the_documented_durations():
    assert [WARNING_WINDOW.days, GRACE_PERIOD.days, READ_ONLY_PERIOD.days] == [30, 14, 30]
    assert not (WARNING_WINDOW.seconds or GRACE_PERIOD.seconds or READ_ONLY_PERIOD.seconds)


@pytest.mark.parametrize("delta, name, writes, api, data_plane", [
    (-timedelta(days=300), "valid", True, True, True),
    (-timedelta(days=30, seconds=1), "valid", True, True, True),
    (-timedelta(days=30), "warning", True, True, True),
    (-timedelta(seconds=1), "warning", True, True, True),
    (timedelta(0), "grace", True, True, True),
    (timedelta(seconds=1), "grace", True, True, True),
    (timedelta(days=14) - timedelta(seconds=1), "grace", True, True, True),
    (timedelta(days=14), "read_only", False, True, True),
    (timedelta(days=44) - timedelta(seconds=1), "read_only", False, True, True),
    (timedelta(days=44), "suspended", False, False, False),
    (timedelta(days=45), "suspended", False, False, False),
])
def test_state_boundaries(issuer, delta, name, writes, api, data_plane):
    state = _state_at(issuer, delta)
    assert (state.name, state.allows_writes, state.allows_api, state.data_plane_enabled) == (
        name, writes, api, data_plane)
    assert state.message


def test_days_remaining_counts_started_days_to_the_next_loss_of_capability(issuer):
    assert _state_at(issuer, -timedelta(days=365)).days_remaining == 365
    assert _state_at(issuer, -timedelta(days=30, seconds=1)).days_remaining == 31
    assert _state_at(issuer, -timedelta(days=30)).days_remaining == 30
    assert _state_at(issuer, -timedelta(days=12, hours=5)).days_remaining == 13
    assert _state_at(issuer, -timedelta(seconds=1)).days_remaining == 1
    assert _state_at(issuer, timedelta(days=4)).days_remaining == 10  # until read-only
    assert _state_at(issuer, timedelta(days=20)).days_remaining == 24  # until suspension
    assert _state_at(issuer, timedelta(days=100)).days_remaining == 0


def test_state_messages_tell_the_operator_what_happens_next(issuer):
    assert "expires in 13 days" in _state_at(issuer, -timedelta(days=12, hours=5)).message
    assert "then read-only" in _state_at(issuer, timedelta(days=1)).message
    assert "changes blocked" in _state_at(issuer, timedelta(days=20)).message
    assert "2027-01-01 00:00:00 UTC" in _state_at(issuer, timedelta(days=60)).message


def test_bootstrap_refuses_an_expired_licence_but_accepts_a_current_one(issuer):
    lic = verify_licence(_licence(issuer), [issuer[1]])
    check_not_expired_for_bootstrap(lic, EXPIRES - timedelta(seconds=1))
    with pytest.raises(LicenceError) as info:
        check_not_expired_for_bootstrap(lic, EXPIRES + timedelta(seconds=1))
    assert info.value.code == "LICENSE_EXPIRED" and "license has expired" in info.value.message


# -- arctic-agent license keygen | issue | verify ---------------------------------------------------

@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_keygen_writes_a_0600_private_key_and_prints_the_public_key(runner, tmp_path):
    result = runner.invoke(license_group, ["keygen", "--out-private", str(tmp_path / "issuer.pem"),
                                           "--out-public", str(tmp_path / "issuer.pub")])
    assert result.exit_code == 0, result.output
    public = result.stdout.strip()
    assert len(public) == 44 and (tmp_path / "issuer.pub").read_text().strip() == public
    assert stat.S_IMODE((tmp_path / "issuer.pem").stat().st_mode) == 0o600


def test_keygen_refuses_to_overwrite_a_key(runner, tmp_path):
    key = tmp_path / "issuer.pem"
    key.write_text("precious")
    result = runner.invoke(license_group, ["keygen", "--out-private", str(key)])
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert key.read_text() == "precious"


def _keygen(runner, tmp_path) -> tuple[str, str]:
    key = tmp_path / "issuer.pem"
    result = runner.invoke(license_group, ["keygen", "--out-private", str(key)])
    return str(key), result.stdout.strip()


def test_issue_then_verify_round_trip(runner, tmp_path):
    key, public = _keygen(runner, tmp_path)
    out = tmp_path / "license.json"
    result = runner.invoke(license_group, [
        "issue", "--key", key, "--customer-id", "cust_x", "--max-nodes", "3", "--max-services", "7",
        "--days", "365", "--feature", "tcp", "--feature", "qos", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["features"] == ["tcp", "qos"] and doc["max_nodes"] == 3
    result = runner.invoke(license_group, ["verify", "--issuer-public-key", public, str(out)])
    assert result.exit_code == 0, result.output
    assert "State:" in result.stdout and "valid" in result.stdout and "cust_x" in result.stdout


def test_issue_prints_json_to_stdout_with_explicit_dates(runner, tmp_path):
    key, public = _keygen(runner, tmp_path)
    result = runner.invoke(license_group, [
        "issue", "--key", key, "--customer-id", "cust_x", "--max-nodes", "1", "--max-services", "0",
        "--issued-at", "2026-01-01T00:00:00Z", "--expires-at", "2026-06-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["expires_at"] == "2026-06-01T00:00:00Z"
    assert verify_licence(doc, [public]).max_services == 0


@pytest.mark.parametrize("args, message", [
    (["--days", "1", "--expires-at", "2030-01-01T00:00:00Z"], "exactly one of --days and --expires-at"),
    ([], "exactly one of --days and --expires-at"),
    (["--expires-at", "tomorrow"], "RFC 3339"),
])
def test_issue_usage_errors(runner, tmp_path, args, message):
    key, _ = _keygen(runner, tmp_path)
    result = runner.invoke(license_group, ["issue", "--key", key, "--customer-id", "cust_x",
                                           "--max-nodes", "1", "--max-services", "1", *args])
    assert result.exit_code == 2 and message in result.output


def test_issue_with_a_bad_customer_id_fails_clearly(runner, tmp_path):
    key, _ = _keygen(runner, tmp_path)
    result = runner.invoke(license_group, ["issue", "--key", key, "--customer-id", "acme", "--max-nodes", "1",
                                           "--max-services", "1", "--days", "30"])
    assert result.exit_code == 1 and "cust_" in result.stderr


def test_verify_exits_1_with_the_reason_on_stderr(runner, tmp_path, issuer, other_issuer):
    path = tmp_path / "license.json"
    path.write_text(json.dumps(_licence(issuer) | {"max_services": 5000}))
    result = runner.invoke(license_group, ["verify", "--issuer-public-key", issuer[1], str(path)])
    assert result.exit_code == 1 and "LICENSE_INVALID" in result.stderr and result.stdout == ""
    path.write_text(json.dumps(_licence(other_issuer)))
    result = runner.invoke(license_group, ["verify", "--issuer-public-key", issuer[1],
                                           "--issuer-public-key", other_issuer[1], str(path)])
    assert result.exit_code == 0, result.output


def test_verify_reports_the_state_at_a_given_time(runner, tmp_path, issuer):
    path = tmp_path / "license.json"
    path.write_text(json.dumps(_licence(issuer)))
    result = runner.invoke(license_group, ["verify", "--issuer-public-key", issuer[1], "--at",
                                           "2027-01-20T00:00:00Z", str(path)])
    assert result.exit_code == 0 and "read_only" in result.stdout


def test_verify_of_a_non_json_file_fails_clearly(runner, tmp_path, issuer):
    path = tmp_path / "license.json"
    path.write_text("{nope")
    result = runner.invoke(license_group, ["verify", "--issuer-public-key", issuer[1], str(path)])
    assert result.exit_code == 1 and "not valid JSON" in result.stderr


# -- timestamps (arctic.timeutil: the format licences and every record use) -------------------------

@pytest.mark.parametrize("text", ["2027-01-01T00:00:00Z", "2027-01-01T01:00:00+01:00",
                                  "2026-12-31T19:00:00-05:00", "2027-01-01 00:00:00Z",
                                  "2027-01-01t00:00:00z"])
def test_parse_rfc3339_accepts_z_and_offsets(text):
    parsed = parse_rfc3339(text)
    assert parsed == EXPIRES and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2027-01-01", "2027-01-01T00:00:00", "yesterday", "2027-13-01T00:00:00Z",
                                  "2027-01-01T00:00:00+25:00", ""])
def test_parse_rfc3339_rejects_other_forms_with_a_clear_message(text):
    with pytest.raises(ValueError, match="RFC 3339|invalid timestamp"):
        parse_rfc3339(text)


def test_timestamps_render_for_the_wire_and_the_cli():
    moment = datetime(2026, 1, 1, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert to_rfc3339(moment) == "2026-01-01T00:00:00Z"
    assert to_cli(moment) == "2026-01-01 00:00:00 UTC"
    assert parse_rfc3339("2026-01-01T00:00:00.5Z").microsecond == 500000
    assert utcnow().tzinfo is not None


def test_naive_datetimes_are_refused_rather_than_guessed():
    with pytest.raises(ValueError, match="naive"):
        to_rfc3339(datetime(2026, 1, 1))
