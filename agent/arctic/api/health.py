"""Liveness and readiness (public)."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.timeutil import to_rfc3339, utcnow

bp = Blueprint("health", __name__)


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})
    timestamp = fields.String(metadata={"example": "2026-01-15T10:30:00Z"})
    checks = fields.Dict(keys=fields.String(), values=fields.String())


@bp.get("/livez")
@endpoint("Liveness: the process answers", scope=None, response=HealthSchema, always=True)
def livez():
    return {"status": "ok", "timestamp": to_rfc3339(utcnow())}


@bp.get("/readyz")
@endpoint("Readiness: store reachable and licence not suspended", scope=None, response=HealthSchema,
          always=True, errors=(503,))
def readyz():
    runtime = agent()
    checks: dict[str, str] = {}
    try:
        runtime.db.read().execute("SELECT 1").fetchone()
        checks["store"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["store"] = f"error: {exc}"
    if runtime.bootstrapped:
        state = runtime.licence_state()
        checks["bootstrapped"] = "ok"
        checks["license"] = state.name if state.allows_api else f"error: {state.name}"
    else:
        checks["bootstrapped"] = "waiting for bootstrap"
    for name, check in runtime.readiness_checks().items():
        checks[name] = check
    ready = all(not value.startswith("error") for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "timestamp": to_rfc3339(utcnow()), "checks": checks}
    return body, (200 if ready else 503)
