"""Flask app factory: blueprints, JSON errors, no HTML anywhere."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from arctic.api import (
    bootstrap,
    cluster,
    credentials,
    health,
    license,
    metrics,
    oauth,
    openapi,
    peers,
    plan,
    routes,
    services,
)
from arctic.errors import ApiError
from arctic.logs import get_logger

BLUEPRINTS = (health, bootstrap, oauth, license, cluster, peers, services, routes, credentials, plan, metrics,
              openapi)
log = get_logger("api")


def create_app(runtime) -> Flask:
    """Build the API around a running ``arctic.runtime.Agent``."""
    app = Flask("arctic")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.extensions["arctic"] = runtime
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    for hook in getattr(runtime, "api_extensions", ()):
        hook(app)

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return err.to_dict(), err.status

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_REQUEST"}.get(err.code, "INVALID_REQUEST")
        message = {404: "no such endpoint (see /v1/openapi.json)",
                   405: "method not allowed on this endpoint"}.get(err.code, err.description)
        return {"error": message, "code": code}, err.code

    @app.errorhandler(Exception)
    def _internal(err: Exception):
        log.exception("internal error")
        return {"error": "internal error (see the agent log)", "code": "INTERNAL"}, 500

    return app
