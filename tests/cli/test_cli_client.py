"""The HTTP client: token handling, recovery header, fail-over and error mapping."""

from __future__ import annotations

import pytest
from arctic.cli.client import ApiClient
from arctic.cli.errors import ApiCallError, ConfigError, ConnectionFailed, ExitCode
from clifakes import AGENT_URL, FakeAgent


def make_client(**kw) -> ApiClient:
    kw.setdefault("client_credentials", ("cli_1", "sec_1"))
    return ApiClient(kw.pop("urls", [AGENT_URL]), **kw)


def test_token_is_fetched_once_with_client_credentials_and_reused(fake_agent: FakeAgent) -> None:
    fake_agent.on("GET", "/v1/peers", [])
    client = make_client()
    client.get("/v1/peers")
    client.get("/v1/peers")
    token_calls = [c for c in fake_agent.calls if c.path == "/v1/oauth/token"]
    assert len(token_calls) == 1
    assert token_calls[0].data == {"grant_type": "client_credentials", "client_id": "cli_1",
                                   "client_secret": "sec_1"}
    assert [c.headers["Authorization"] for c in fake_agent.api_calls()] == ["Bearer tok-1", "Bearer tok-1"]


def test_explicit_token_is_sent_as_is_and_no_token_is_fetched(fake_agent: FakeAgent) -> None:
    fake_agent.on("GET", "/v1/peers", [])
    make_client(token="given").get("/v1/peers")
    assert fake_agent.token_fetches == 0
    assert fake_agent.api_calls()[0].headers["Authorization"] == "Bearer given"


def test_recovery_token_alone_authorises_without_a_bearer(fake_agent: FakeAgent) -> None:
    fake_agent.on("GET", "/v1/credentials", {"credentials": []})
    make_client(client_credentials=None, recovery_token="rec").get("/v1/credentials")
    headers = fake_agent.api_calls()[0].headers
    assert headers["X-Arctic-Recovery"] == "rec"
    assert "Authorization" not in headers


def test_expired_fetched_token_is_replaced_once(fake_agent: FakeAgent) -> None:
    answers = iter([(401, {"error": "token expired", "code": "TOKEN_EXPIRED"}), (200, [])])
    fake_agent.handle("GET", "/v1/peers", lambda _c: next(answers))
    assert make_client().get("/v1/peers") == []
    assert [c.headers["Authorization"] for c in fake_agent.api_calls()] == ["Bearer tok-1", "Bearer tok-2"]


def test_error_body_becomes_api_call_error_with_status_code_and_message(fake_agent: FakeAgent) -> None:
    fake_agent.on("GET", "/v1/services/svc_x", {"error": "service not found", "code": "NOT_FOUND"}, status=404)
    with pytest.raises(ApiCallError) as info:
        make_client().get("/v1/services/svc_x")
    assert (info.value.status, info.value.code, info.value.message) == (404, "NOT_FOUND", "service not found")
    assert info.value.exit_code == ExitCode.GENERAL


@pytest.mark.parametrize("status,code", [(401, "UNAUTHORIZED"), (401, "TOKEN_EXPIRED"), (403, "FORBIDDEN")])
def test_auth_refusals_map_to_exit_code_5(fake_agent: FakeAgent, status: int, code: str) -> None:
    fake_agent.on("GET", "/v1/peers", {"error": code.lower(), "code": code}, status=status)
    with pytest.raises(ApiCallError) as info:
        make_client(token="t").get("/v1/peers")
    assert info.value.exit_code == ExitCode.AUTH


def test_unreachable_endpoint_falls_over_to_the_next_and_remembers_it(fake_agent: FakeAgent) -> None:
    fake_agent.refuse.add("http://down.test:8080")
    fake_agent.on("GET", "/livez", {"status": "ok"})
    client = make_client(urls=["http://down.test:8080", AGENT_URL])
    assert client.get("/livez", auth=False) == {"status": "ok"}
    assert client.base_url == AGENT_URL


def test_all_endpoints_refusing_is_a_connection_error(fake_agent: FakeAgent) -> None:
    fake_agent.refuse.add(AGENT_URL)
    with pytest.raises(ConnectionFailed, match="^connection refused$") as info:
        make_client().get("/livez", auth=False)
    assert info.value.exit_code == ExitCode.CONNECTION


def test_authenticated_call_without_any_credential_is_a_config_error(fake_agent: FakeAgent) -> None:
    with pytest.raises(ConfigError, match="no current cluster set"):
        make_client(client_credentials=None).get("/v1/peers")
    assert fake_agent.calls == []
