"""``/v1/openapi.json``, generated from the ``@endpoint`` metadata and marshmallow schemas.

Nothing here is written by hand per endpoint: walking the URL map keeps the document complete.
"""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app

from arctic import __version__
from arctic.api.endpoint import Operation, endpoint
from arctic.api.schemas import ErrorSchema

bp = Blueprint("openapi", __name__)

_STATUS_TEXT = {400: "Invalid request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                409: "Conflict", 422: "Refused (licence, limits, handshake)", 503: "Not ready"}


def _path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def _schema_name(schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__


def build_spec(app) -> dict:
    spec = APISpec(title="Arctic agent API", version=__version__, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Routes and accelerates TCP traffic between Linux hosts."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.security_scheme("recovery", {"type": "apiKey", "in": "header", "name": "X-Arctic-Recovery"})
    spec.components.schema("Error", schema=ErrorSchema)
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        op: Operation | None = getattr(view, "arctic_operation", None)
        if op is None:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(_path(rule.rule), {})[method.lower()] = _operation(op, rule, method)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(op: Operation, rule, method: str) -> dict:
    out: dict = {"summary": op.summary, "operationId": rule.endpoint.replace(".", "_"),
                 "tags": [rule.endpoint.split(".")[0]]}
    params = [{"in": "path", "name": arg, "required": True,
               "schema": {"type": "integer" if f"int:{arg}" in rule.rule else "string"}}
              for arg in sorted(rule.arguments)]
    if op.query is not None:
        out["parameters"] = params + [{"in": "query", "schema": op.query}]
    elif params:
        out["parameters"] = params
    if op.body is not None:
        media = "application/x-www-form-urlencoded" if op.form else "application/json"
        out["requestBody"] = {"required": True, "content": {media: {"schema": op.body}}}
    ok: dict = {"description": "OK"}
    if op.response is not None:
        schema = {"type": "array", "items": op.response} if op.many else op.response
        ok["content"] = {"application/json": {"schema": schema}}
    out["responses"] = {str(op.status): ok}
    errors = set(op.errors)
    if op.scope is not None:
        out["security"] = [{"bearer": []}, {"recovery": []}]
        errors |= {401, 403}
    for status in sorted(errors):
        out["responses"][str(status)] = {"description": _STATUS_TEXT.get(status, "Error"),
                                         "content": {"application/json": {"schema": "Error"}}}
    return out


@bp.get("/v1/openapi.json")
@endpoint("This document", scope=None, always=True)
def openapi():
    return build_spec(current_app)
