"""Every protected endpoint x {no token, wrong scope, right scope, expired token, revoked credential}.

The endpoint list comes from the app's URL map, so a new endpoint is covered automatically.
"""

from __future__ import annotations

import pytest
from arctic.api.app import create_app
from arctic.auth import scopes as scope_rules
from arctic.auth import tokens

ALL = [s for s in scope_rules.SCOPES if s != scope_rules.ADMIN]


def _protected_operations():
    from arctic.runtime import Agent  # noqa: F401  (import check only)

    app = create_app(runtime=None)
    out = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions[rule.endpoint], "arctic_operation", None)
        if op is None or op.scope is None:
            continue
        path = rule.rule.replace("<int:route_id>", "1").replace("<service_id>", "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ")
        path = path.replace("<peer_id>", "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ").replace("<client_id>", "cli_nope")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append(pytest.param(method, path, op.scope, id=f"{method} {rule.rule}"))
    return out


OPERATIONS = _protected_operations()


def test_matrix_covers_the_documented_endpoints():
    ids = {p.id for p in OPERATIONS}
    for expected in ("POST /v1/services", "GET /v1/services/<service_id>/routes", "DELETE /v1/credentials/<client_id>",
                     "GET /v1/peers", "POST /v1/cluster/sync", "PUT /v1/license"):
        assert expected in ids


def _credential(api, scopes):
    cred = api.post("/v1/credentials", json={"scopes": scopes}).get_json()
    return cred, api.token_for(cred["client_id"], cred["client_secret"])


@pytest.mark.parametrize("method, path, needed", OPERATIONS)
def test_scope_matrix(api, method, path, needed):
    body = {"json": {}} if method in ("POST", "PUT") else {}
    # no token
    resp = api.client.open(path, method=method, **body)
    assert resp.status_code == 401, resp.get_json()
    # wrong scope (not applicable when any valid token is enough)
    if needed != "any":
        wrong = [s for s in ALL if not scope_rules.grants([s], needed)][:1]
        _, token = _credential(api, wrong)
        resp = api.call(method, path, token=token, **body)
        assert resp.status_code == 403 and resp.get_json()["code"] == "FORBIDDEN"
    # right scope: whatever the outcome, it is not an auth refusal
    right = [scope_rules.ADMIN] if needed in ("any", scope_rules.ADMIN) else [needed]
    cred, token = _credential(api, right)
    resp = api.call(method, path, token=token, **body)
    assert resp.status_code not in (401, 403), resp.get_json()
    # expired token
    expired = tokens.issue_token(api.runtime.identity.private_key, issuer_peer_id=api.local_peer_id,
                                 client_id=cred["client_id"], scopes=right, ttl=-30)
    resp = api.call(method, path, token=expired, **body)
    assert resp.status_code == 401 and resp.get_json()["code"] == "TOKEN_EXPIRED"
    # revoked credential: its still-unexpired token stops working at once
    assert api.delete(f"/v1/credentials/{cred['client_id']}").status_code == 200
    resp = api.call(method, path, token=token, **body)
    assert resp.status_code == 401 and resp.get_json()["code"] == "UNAUTHORIZED"
