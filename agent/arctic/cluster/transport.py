"""HTTP between peers (port 8080), with failures classified the way operators read them."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable

import requests

DEFAULT_TIMEOUT = 5.0

Meter = Callable[[int, int], None]
"""``meter(bytes_sent, bytes_received)``: application bytes of one call (request body, response body)."""


class PeerCallError(Exception):
    """``reason`` is one of: connection refused, connection timeout, unreachable, http error."""

    def __init__(self, reason: str, detail: str = "", status: int | None = None, body: dict | None = None):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason, self.detail, self.status, self.body = reason, detail, status, body or {}


_session = requests.Session()
_session.trust_env = False  # never route peer traffic through an environment proxy


def base_url(address: str) -> str:
    return address if address.startswith("http") else f"http://{address}"


def call(address: str, method: str, path: str, *, json=None, headers=None, timeout: float = DEFAULT_TIMEOUT,
         meter: Meter | None = None) -> dict:
    """One JSON call to a peer; the body is sent compact so that ``meter`` counts what crosses the wire."""
    data = None
    headers = dict(headers or {})
    if json is not None:
        data = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    try:
        resp = _session.request(method, base_url(address) + path, data=data, headers=headers, timeout=timeout)
    except requests.exceptions.ConnectTimeout:
        raise PeerCallError("connection timeout", address) from None
    except requests.exceptions.ReadTimeout:
        raise PeerCallError("connection timeout", f"{address} did not answer within {timeout}s") from None
    except requests.exceptions.ConnectionError as err:
        text = str(err)
        reason = "connection refused" if "refused" in text.lower() else "unreachable"
        if "timed out" in text.lower():
            reason = "connection timeout"
        raise PeerCallError(reason, address) from None
    if meter is not None:
        meter(len(data or b""), len(resp.content))
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if resp.status_code >= 400:
        raise PeerCallError("http error", body.get("error", resp.reason), resp.status_code, body)
    return body


def raw(address: str, method: str, path: str, *, headers: dict, data: bytes | None, params=None,
        timeout: float = 30.0) -> requests.Response:
    """Forward an API request as-is (used by 'any agent answers')."""
    return _session.request(method, base_url(address) + path, headers=headers, data=data, params=params,
                            timeout=timeout)
