"""One HTTP client for every command: base URL fail-over, bearer token, recovery header, error mapping.

Commands never touch ``requests`` directly, so authentication (fetching a client-credentials token
once per process and reusing it), agent error bodies (-> ``ApiCallError``) and connection failures
(-> ``ConnectionFailed``, exit 4) are handled the same way everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import click
import requests

from arctic.cli.errors import ApiCallError, ConfigError, ConnectionFailed

__all__ = ["ApiCallError", "ApiClient", "ConnectionFailed", "SESSION_FACTORY", "normalise_url"]

#: Tests replace this to route requests to a fake; production uses a real ``requests.Session``.
SESSION_FACTORY: Callable[[], Any] = requests.Session

RECOVERY_HEADER = "X-Arctic-Recovery"
_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')  # RFC 7234 warning-value: code agent "text"
TOKEN_PATH = "/v1/oauth/token"


def normalise_url(url: str) -> str:
    """Accept ``host:port`` as typed by operators as well as full URLs; drop a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def _connection_message(exc: BaseException, url: str) -> str:
    text = str(exc).lower()
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
        return "connection timeout"
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "resolution" in text:
        return f"cannot resolve host {urlsplit(url).hostname}"
    if "no route to host" in text:
        return "no route to host"
    return f"cannot connect to {url}: {exc.__class__.__name__}"


def warnings_of(resp: Any) -> list[str]:
    """The texts of the agent's ``Warning`` headers (a write that succeeded but deserves a notice)."""
    header = getattr(resp, "headers", {}).get("Warning") or ""
    return [match.group(1) for match in _WARNING.finditer(header)]


def _error_from_response(resp: Any) -> ApiCallError:
    code = f"HTTP_{resp.status_code}"
    message = f"HTTP {resp.status_code} {getattr(resp, 'reason', '') or ''}".strip()
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("message") or message)
        code = str(body.get("code") or code)
    return ApiCallError(resp.status_code, code, message)


class ApiClient:
    """Talks to one cluster through the first reachable of ``base_urls``.

    ``token`` (from --token/ARCTIC_TOKEN) wins; otherwise a token is fetched with
    ``client_credentials`` on first use and cached for the life of the process.
    ``recovery_token`` adds ``X-Arctic-Recovery`` (admin for that request, no bearer needed).
    """

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        token: str | None = None,
        client_credentials: tuple[str, str] | None = None,
        recovery_token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not base_urls:
            raise ConfigError("no agent URL known", hint="pass --url or set ARCTIC_URL")
        self.base_urls = [normalise_url(u) for u in base_urls]
        self._explicit_token = token or None
        self._cached_token: str | None = None
        self.client_credentials = client_credentials
        self.recovery_token = recovery_token or None
        self.timeout = timeout
        self._session = SESSION_FACTORY()

    @property
    def base_url(self) -> str:
        """The endpoint that answered last (first configured until a request was made)."""
        return self.base_urls[0]

    # -- authentication ---------------------------------------------------------------------------

    def access_token(self) -> str:
        """A bearer token: the explicit one, else a cached or freshly fetched client-credentials token."""
        if self._explicit_token:
            return self._explicit_token
        if self._cached_token is None:
            self._cached_token = self.fetch_token()
        return self._cached_token

    def fetch_token(self) -> str:
        if not self.client_credentials:
            raise ConfigError(
                "no current cluster set",
                hint="pass --token or --recovery-token, or run 'arctic bootstrap' to save credentials",
            )
        client_id, client_secret = self.client_credentials
        body = self.request(
            "POST",
            TOKEN_PATH,
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
            auth=False,
        )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ApiCallError(502, "BAD_RESPONSE", "token endpoint returned no access_token")
        return str(token)

    def _auth_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.recovery_token:
            headers[RECOVERY_HEADER] = self.recovery_token
            if not (self._explicit_token or self.client_credentials):
                return headers  # the recovery token alone authorises the request
        headers["Authorization"] = f"Bearer {self.access_token()}"
        return headers

    # -- requests ---------------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for an empty body).

        A 401 on a token this client fetched itself (expired meanwhile) is retried once with a
        fresh token; an explicit --token is never silently replaced.
        """
        headers = self._auth_headers() if auth else {}
        resp = self._send(method, path, params=params, json=json, data=data, headers=headers)
        if resp.status_code == 401 and auth and self._cached_token and not self._explicit_token:
            self._cached_token = None
            headers = self._auth_headers()
            resp = self._send(method, path, params=params, json=json, data=data, headers=headers)
        if resp.status_code >= 400:
            raise _error_from_response(resp)
        for text in warnings_of(resp):
            click.echo(f"Warning: {text}", err=True)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def _send(self, method: str, path: str, **kw: Any) -> Any:
        """Try each base URL in order until one accepts the connection; remember that one."""
        last_exc: BaseException | None = None
        clean = {k: v for k, v in kw.items() if v is not None}
        for index, base in enumerate(self.base_urls):
            url = base + path
            try:
                resp = self._session.request(method, url, timeout=self.timeout, **clean)
            except requests.exceptions.ReadTimeout as exc:
                # The request may have been applied: never replay it against another endpoint.
                raise ConnectionFailed("connection timeout", hint=f"no answer from {base} in {self.timeout}s") from exc
            except requests.exceptions.ConnectionError as exc:
                last_exc = exc
                continue
            if index:
                self.base_urls.insert(0, self.base_urls.pop(index))
            return resp
        assert last_exc is not None
        tried = ", ".join(self.base_urls)
        raise ConnectionFailed(
            _connection_message(last_exc, self.base_urls[-1]),
            hint=f"is the agent running and reachable at {tried}?",
        ) from last_exc
