"""Failures the CLI knows how to report, each tied to one documented exit code.

Scripts branch on the exit code (reference notes §3.3), so every failure path raises one of these
and ``main()`` is the single place that turns them into ``Error: <message>`` on stderr + exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    GENERAL = 1
    USAGE = 2
    CONFIG = 3
    CONNECTION = 4
    AUTH = 5
    PARTIAL = 6


class CliError(Exception):
    """A failure with an operator-facing message and the exit code scripts expect."""

    exit_code: ExitCode = ExitCode.GENERAL

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageProblem(CliError):
    """Bad flags that click itself cannot express (e.g. 'give at least one of ...')."""

    exit_code = ExitCode.USAGE


class ConfigError(CliError):
    exit_code = ExitCode.CONFIG


class ConnectionFailed(CliError):
    exit_code = ExitCode.CONNECTION


class PartialFailure(CliError):
    """The command ran, but not everywhere it should have (a peer not reached, or one that failed)."""

    exit_code = ExitCode.PARTIAL


AUTH_CODES = frozenset({"UNAUTHORIZED", "TOKEN_EXPIRED", "FORBIDDEN"})


class ApiCallError(CliError):
    """The agent answered with an error body ``{"error", "code"}`` (or something unparseable)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        if self.status in (401, 403) or self.code in AUTH_CODES:
            return ExitCode.AUTH
        return ExitCode.GENERAL
