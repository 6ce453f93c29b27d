"""Turn request bodies into validated dicts, or into an ``ApiError`` with the right code.

The first problem found decides the code (``MISSING_FIELD``, ``INVALID_CIDR``, ``INVALID_TRANSPORT``,
else ``INVALID_REQUEST``); the message lists every problem so one round trip fixes them all.
"""

from __future__ import annotations

from flask import request
from marshmallow import RAISE, Schema, ValidationError

from arctic.errors import ApiError, InvalidRequest

_MISSING = "Missing data for required field."
_UNKNOWN = "Unknown field."


def json_body() -> dict:
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object (Content-Type: application/json)")
    return data


def _flatten(messages, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            out.extend(_flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    elif isinstance(messages, list):
        for item in messages:
            out.extend(_flatten(item, prefix))
    else:
        out.append((prefix, str(messages)))
    return out


def _code_for(schema: Schema, path: str, message: str) -> str:
    if message == _MISSING:
        return "MISSING_FIELD"
    if message == _UNKNOWN:
        return "INVALID_REQUEST"
    current = schema
    field = None
    for part in path.split("."):
        if part.isdigit():
            continue
        field = current.fields.get(part) if current is not None else None
        if field is None:
            break
        inner = getattr(field, "inner", None)
        nested = getattr(inner, "schema", None) or getattr(field, "schema", None)
        current = nested
    return (field.metadata.get("code") if field is not None else None) or "INVALID_REQUEST"


def _wording(path: str, message: str) -> str:
    if message == _MISSING:
        return f"{path} is required"
    if message == _UNKNOWN:
        return f"unknown field {path!r}"
    parent, _, leaf = path.rpartition(".")
    if leaf and message.startswith(leaf):
        return f"{parent}.{message}" if parent else message
    return f"{path}: {message}"


def load(schema: Schema, data: dict, *, partial: bool = False) -> dict:
    try:
        return schema.load(data, partial=partial, unknown=RAISE)
    except ValidationError as err:
        problems = _flatten(err.messages)
        path, message = problems[0]
        code = _code_for(schema, path, message)
        text = "; ".join(_wording(p, m) for p, m in problems)
        raise ApiError(text, code=code, status=400) from None
