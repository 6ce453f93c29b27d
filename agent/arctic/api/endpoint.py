"""What an endpoint needs, declared once: its scope, its licence gate and its OpenAPI description.

``@endpoint(...)`` both enforces access (bearer JWT or the break-glass recovery header) and records
the metadata from which ``/v1/openapi.json`` is generated, so the document cannot drift from the
code that enforces it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app, g, request
from marshmallow import Schema

from arctic.auth import scopes as scope_rules
from arctic.auth import tokens
from arctic.auth.recovery import matches_recovery_token
from arctic.errors import ApiError, Forbidden, NotBootstrapped, TokenExpired, Unauthorized
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339, utcnow

log = get_logger("api")


@dataclass(frozen=True)
class Principal:
    client_id: str | None
    scopes: tuple[str, ...]
    via: str  # "token" | "recovery"


@dataclass(frozen=True)
class Operation:
    summary: str
    scope: str | None  # None = public
    body: type[Schema] | Schema | None = None
    query: type[Schema] | None = None
    response: type[Schema] | Schema | None = None
    many: bool = False
    status: int = 200
    write: bool = False  # blocked when the licence is read-only
    always: bool = False  # allowed even when the licence is suspended
    errors: tuple[int, ...] = ()
    form: bool = False


def agent():
    """The running agent (composition root) behind this request."""
    return current_app.extensions["arctic"]


def endpoint(summary: str, *, scope: str | None, **options) -> Callable:
    op = Operation(summary=summary, scope=scope, **options)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if op.scope is not None:
                g.principal = authenticate(op.scope)
            _licence_gate(op)
            return view(*args, **kwargs)

        wrapper.arctic_operation = op
        return wrapper

    return decorate


def _licence_gate(op: Operation) -> None:
    runtime = agent()
    if op.always or not runtime.bootstrapped:
        return
    state = runtime.licence_state()
    if not state.allows_api:
        raise ApiError(f"licence suspended: {state.message}; install a renewed licence with "
                       "'arctic license update --license-file FILE'", code="LICENSE_EXPIRED", status=422)
    if op.write and not state.allows_writes:
        raise ApiError(f"licence is read-only ({state.message}): reads and traffic continue but changes are "
                       "blocked; renew with 'arctic license update --license-file FILE'",
                       code="LICENSE_EXPIRED", status=422)


def authenticate(needed: str) -> Principal:
    """Resolve the caller and check it holds ``needed`` (a scope URN, or "any" for any valid caller)."""
    runtime = agent()
    if not runtime.bootstrapped:
        raise NotBootstrapped("agent is not bootstrapped yet: run 'arctic bootstrap --url URL --license-file FILE'")
    recovery = request.headers.get("X-Arctic-Recovery")
    if recovery:
        if runtime.recovery_token and matches_recovery_token(recovery, runtime.recovery_token):
            log.warning("recovery token used", method=request.method, path=request.path,
                        remote=request.remote_addr)
            return Principal(None, (scope_rules.ADMIN,), "recovery")
        log.warning("invalid recovery token presented", path=request.path, remote=request.remote_addr)
        raise Unauthorized("invalid recovery token")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("unauthorized: send 'Authorization: Bearer <token>' (get one with 'arctic auth token')")
    token = token.strip()
    issuer = tokens.unverified_issuer(token)
    key = runtime.peer_public_key(issuer) if issuer else None
    if key is None:
        raise Unauthorized("unauthorized: token was not issued by a peer of this cluster")
    try:
        claims = tokens.verify_token(token, key)
    except tokens.TokenExpired:
        raise TokenExpired("token expired: request a new one (POST /v1/oauth/token or 'arctic auth token')") \
            from None
    except tokens.TokenInvalid as err:
        raise Unauthorized(f"unauthorized: invalid token ({err})") from None
    cred = repo.get_credential(runtime.db.read(), claims["sub"])
    if cred is None or cred.revoked_at:
        raise Unauthorized("unauthorized: the credential behind this token is unknown here or was revoked")
    held = tuple(claims.get("scope", "").split())
    if needed != "any" and not scope_rules.grants(list(held), needed):
        raise Forbidden(f"forbidden: this endpoint needs scope {needed}")
    repo.touch_credential_use(runtime.db.read(), cred.client_id, to_rfc3339(utcnow()))
    return Principal(cred.client_id, held, "token")
