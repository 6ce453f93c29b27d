"""Strict marshmallow fields.

JSON APIs driven by automation should not guess: ``"true"`` is not a boolean, ``1.5`` and ``true``
are not integers, and CIDRs are validated by the one set of rules in ``arctic.domain.cidr``. Each
field carries the error ``code`` the API reports when it is wrong.
"""

from __future__ import annotations

from marshmallow import ValidationError, fields

from arctic.domain.cidr import CidrError, parse_interface, parse_network


class StrictInteger(fields.Integer):
    def __init__(self, *, minimum: int | None = None, maximum: int | None = None, **kw):
        super().__init__(strict=True, **kw)
        self.minimum, self.maximum = minimum, maximum

    def _deserialize(self, value, attr, data, **kw):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(f"must be <= {self.maximum}")
        return value

    def _jsonschema_type_mapping(self):  # pragma: no cover - apispec hook
        schema = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class StrictBoolean(fields.Boolean):
    def _deserialize(self, value, attr, data, **kw):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class StrictString(fields.String):
    def _deserialize(self, value, attr, data, **kw):
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        return super()._deserialize(value, attr, data, **kw)


class NetworkCidr(fields.String):
    """A route CIDR (network address must match the mask); normalised to its canonical text."""

    def __init__(self, **kw):
        kw.setdefault("metadata", {}).update(code="INVALID_CIDR", example="10.0.0.0/8")
        super().__init__(**kw)

    def _deserialize(self, value, attr, data, **kw):
        try:
            return str(parse_network(value, attr or "cidr"))
        except CidrError as err:
            raise ValidationError(str(err)) from None


class InterfaceCidr(fields.String):
    """A service interface address with prefix (``192.168.100.10/24``)."""

    def __init__(self, version: int, **kw):
        kw.setdefault("metadata", {}).update(
            code="INVALID_CIDR", example="192.168.100.10/24" if version == 4 else "fd00::10/64"
        )
        super().__init__(**kw)
        self.version = version

    def _deserialize(self, value, attr, data, **kw):
        try:
            return str(parse_interface(value, attr or "cidr", self.version))
        except CidrError as err:
            raise ValidationError(str(err)) from None
