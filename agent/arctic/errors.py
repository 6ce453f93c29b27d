"""Every refusal the agent makes is an ``ApiError``: HTTP status, stable code, operator message.

The API turns them into ``{"error": message, "code": code}``; the CLI maps them to exit codes.
Messages say what to fix, not only what went wrong.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "INVALID_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": self.message, "code": self.code}


class InvalidRequest(ApiError):
    status, code = 400, "INVALID_REQUEST"


class MissingField(ApiError):
    status, code = 400, "MISSING_FIELD"


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class TokenExpired(ApiError):
    status, code = 401, "TOKEN_EXPIRED"


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"


class AlreadyExists(ApiError):
    status, code = 409, "ALREADY_EXISTS"


class AlreadyBootstrapped(ApiError):
    status, code = 409, "ALREADY_BOOTSTRAPPED"


class NotBootstrapped(ApiError):
    status, code = 409, "NOT_BOOTSTRAPPED"
