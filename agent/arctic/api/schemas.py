"""Shared response/error schemas used by several blueprints and by the OpenAPI document."""

from __future__ import annotations

from marshmallow import Schema, fields


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "what went wrong and how to fix it"})
    code = fields.String(required=True, metadata={"example": "INVALID_CIDR"})
