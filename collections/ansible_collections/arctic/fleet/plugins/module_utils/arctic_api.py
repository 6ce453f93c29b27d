# Copyright: Arctic contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one client every arctic.fleet module uses to talk to an Arctic agent.

Why one file: connection options, authentication, error mapping, name resolution and the
"read -> normalise -> compare -> act" lifecycle are the same for every resource, so modules stay
thin (a spec and a small subclass) and behave alike. Stdlib only (``fetch_url``), because the
code runs wherever Ansible runs a module: the controller, an AWX execution environment or the host.

FOR INTERNAL COLLECTION USE ONLY: the names here may change between minor releases.
"""

from __future__ import annotations

import ipaddress
import json
import re
import typing as t
from urllib.parse import urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.urls import fetch_url

DEFAULT_AGENT_URL = "http://127.0.0.1:8080"
DEFAULT_AGENT_PORT = 8080

# No HTTP answer at all (refused, DNS, TLS, timeout; fetch_url's status -1): no status in the result.
UNREACHABLE = "AGENT_UNREACHABLE"
# The agent answered something that is not the documented {"error", "code"} shape.
BAD_RESPONSE = "BAD_RESPONSE"
# Refusals decided by the module itself before any write (bad input, ambiguity, immutability).
MODULE_REFUSED = "INVALID_REQUEST"
# The agent's refusal in a dry run (HTTP 200 with valid: false): no status in the result either.
PLAN_INVALID = "PLAN_INVALID"
# One RFC 7234 warning-value of a ``Warning`` header: ``299 arctic "text"`` (the agent's notices).
_WARNING_VALUE = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')
NO_CREDENTIALS_HINT = (
    "no credentials were given: set agent_token, or client_id and client_secret "
    "(or ARCTIC_AGENT_TOKEN, ARCTIC_CLIENT_ID and ARCTIC_CLIENT_SECRET)"
)


def arctic_argument_spec() -> dict:
    """Connection options shared by every module (documented once in doc_fragments/connection.py).

    Environment fallbacks let one AWX credential (which injects env vars) feed every module,
    while ``module_defaults`` / task arguments still win because they are real task options.
    """
    return dict(
        agent_url=dict(type="str", default=DEFAULT_AGENT_URL, fallback=(env_fallback, ["ARCTIC_AGENT_URL"])),
        agent_token=dict(type="str", no_log=True, fallback=(env_fallback, ["ARCTIC_AGENT_TOKEN"])),
        client_id=dict(type="str", fallback=(env_fallback, ["ARCTIC_CLIENT_ID"])),
        client_secret=dict(type="str", no_log=True, fallback=(env_fallback, ["ARCTIC_CLIENT_SECRET"])),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=30),
    )


def arctic_module_kwargs() -> dict:
    """AnsibleModule keyword arguments implied by the connection options."""
    return dict(required_together=[("client_id", "client_secret")])


class ArcticApiError(Exception):
    """A refusal, from the agent (its message and code) or from the module before any write.

    ``status`` is the HTTP status of the agent's answer, and None when there was no HTTP refusal (no answer at all,
    a dry run that the agent answered with ``valid: false``, or the module's own refusal).
    """

    def __init__(self, message: str, code: str = MODULE_REFUSED, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def fail(self, module: t.Any, **extra: t.Any) -> t.NoReturn:
        """Fail the task with the agent's own words: msg, code and, when the agent answered, its HTTP status."""
        result = dict(msg=self.message, code=self.code)
        if is_http_status(self.status):
            result["status"] = self.status
        result.update(extra)
        module.fail_json(**result)


def is_http_status(value: t.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def warning_texts(header: str | None) -> list:
    """The texts of a ``Warning`` header (``299 arctic "text", 299 arctic "other"``); unparsable: the header."""
    if not header or not header.strip():
        return []
    texts = [re.sub(r"\\(.)", r"\1", match.group(1)) for match in _WARNING_VALUE.finditer(header)]
    return texts or [header.strip()]


# --------------------------------------------------------------------------------------------
# Pure normalisation helpers: the agent and the user may spell the same value differently.
# --------------------------------------------------------------------------------------------


def normalise_network(text: str | None) -> str | None:
    """Canonical text of a route CIDR (``FD00:0::/64`` -> ``fd00::/64``); unparsable text unchanged."""
    if text is None:
        return None
    try:
        return str(ipaddress.ip_network(to_text(text).strip(), strict=True))
    except ValueError:
        return text


def normalise_interface(text: str | None) -> str | None:
    """Canonical text of an interface address such as ``192.168.100.10/24``; ``""`` means none."""
    if text is None or to_text(text).strip() == "":
        return None
    try:
        return str(ipaddress.ip_interface(to_text(text).strip()))
    except ValueError:
        return text


def check_network(text: str | None, field: str) -> None:
    """Refuse a route CIDR the agent would refuse, before anything is written.

    Checked up front because a service with inline routes is several requests: a bad third route
    must not leave a half-built service behind.
    """
    if text is None:
        return
    if "/" not in text:
        one = "128" if ":" in text else "32"
        network = "fd00::/64" if ":" in text else "10.0.0.0/8"
        raise ArcticApiError(f"{field} {text!r} needs slash notation: a network such as {network}, or {text}/{one} "
                             "for this one address (the agent's wording)", "INVALID_CIDR")
    try:
        ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ArcticApiError(
                f"{field} {text!r} is not valid CIDR notation (expected e.g. 10.0.0.0/8)", "INVALID_CIDR"
            ) from None
        raise ArcticApiError(
            f"{field} {text!r} has host bits set: the network address must match the mask, use {loose}",
            "INVALID_CIDR",
        ) from None


def normalise_address(address: str) -> str:
    """``host`` -> ``host:8080`` and lower-case host names, so a known peer is recognised."""
    address = address.strip()
    if address.startswith("["):
        host, _bracket, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(DEFAULT_AGENT_PORT)
        return f"[{host.lower()}]:{port}"
    if address.count(":") == 1:
        host, port = address.split(":")
        return f"{host.lower()}:{port}"
    if address.count(":") > 1:  # bare IPv6 literal without brackets
        return f"[{address.lower()}]:{DEFAULT_AGENT_PORT}"
    return f"{address.lower()}:{DEFAULT_AGENT_PORT}"


def _bare_id(value: str) -> str:
    """``svc_01H...`` and ``01h...`` name the same object (the agent accepts both forms)."""
    head, sep, tail = value.partition("_")
    return (tail if sep and head.isalpha() else value).upper()


def id_matches(object_id: t.Any, ref: str) -> bool:
    """True when ``ref`` is ``object_id`` in prefixed or bare form."""
    if not isinstance(object_id, str) or not ref:
        return False
    return object_id == ref or _bare_id(object_id) == _bare_id(ref)


def route_key(route: dict) -> tuple:
    """A route is identified within its service by its (source_cidr, dest_cidr) pair."""
    return (normalise_network(route.get("source_cidr")), normalise_network(route.get("dest_cidr")))


def route_view(route: dict) -> dict:
    """The comparable part of a route: what the user declares, canonically spelled."""
    source, dest = route_key(route)
    return {"source_cidr": source, "dest_cidr": dest, "priority": route.get("priority")}


def sorted_routes(routes: t.Iterable[dict]) -> list:
    """Routes in a stable order so two lists compare (and diff) equal when they mean the same."""
    return sorted((route_view(r) for r in routes), key=lambda r: (r["source_cidr"] or "", r["dest_cidr"] or ""))


def _as_list(payload: t.Any, key: str) -> list:
    """Lists are bare JSON arrays; tolerate a ``{"<key>": [...]}`` wrapper too."""
    if isinstance(payload, dict) and isinstance(payload.get(key), list):
        return payload[key]
    if isinstance(payload, list):
        return payload
    raise ArcticApiError(f"the agent answered a {key} list that is not a JSON array", BAD_RESPONSE)


def _describe(obj: dict) -> str:
    """``'web' (svc_01H...)`` for messages, or just the id when there is no name."""
    name = obj.get("name")
    return f"{name!r} ({obj.get('id')})" if name else str(obj.get("id"))


def find_one(items: list, ref: str, kind: str) -> dict | None:
    """The item whose id (prefixed or bare) or else whose unique name is ``ref``; None if none.

    Ids win over names so a name that happens to look like an id cannot shadow a real id.
    """
    for item in items:
        if id_matches(item.get("id"), ref):
            return item
    named = [item for item in items if item.get("name") == ref]
    if len(named) > 1:
        raise ArcticApiError(
            f"{len(named)} {kind}s are named {ref!r} ({', '.join(str(i.get('id')) for i in named)}); "
            "use the id instead",
            MODULE_REFUSED,
        )
    return named[0] if named else None


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------


class ArcticClient:
    """HTTP access to one agent: auth, JSON, error mapping and id-or-name lookups."""

    def __init__(self, module: t.Any):
        self.module = module
        self.base_url = module.params["agent_url"].rstrip("/")
        self._token = module.params.get("agent_token")
        self._peers: list | None = None
        self._warned: set = set()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, data: bytes | None, headers: dict) -> tuple:
        """One HTTP exchange -> (status, body text). Status -1 means no HTTP answer at all."""
        response, info = fetch_url(
            self.module,
            self.base_url + path,
            data=data,
            headers=headers,
            method=method,
            timeout=self.module.params["timeout"],
        )
        status = info.get("status", -1)
        body = response.read() if response is not None and 200 <= status < 300 else info.get("body") or b""
        if status == -1:
            raise ArcticApiError(
                f"cannot reach the Arctic agent at {self.base_url}: {info.get('msg', 'no answer')}",
                UNREACHABLE,
            )
        self._pass_on_warnings(info.get("warning"))
        return status, to_text(body, errors="surrogate_or_strict")

    def _pass_on_warnings(self, header: t.Any) -> None:
        """The agent's ``Warning`` notices reach the playbook user (``module.warn``), each once per task."""
        for text in warning_texts(to_text(header) if header else None):
            if text not in self._warned:
                self._warned.add(text)
                self.module.warn(f"agent {self.base_url}: {text}")

    def _error_from(self, method: str, path: str, status: int, text: str) -> ArcticApiError:
        """Map an HTTP error answer to the agent's own message and code."""
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("error"):
            code = to_text(payload.get("code") or f"HTTP_{status}")
            return ArcticApiError(to_text(payload["error"]), code, status)
        snippet = text.strip()[:200] or "empty body"
        return ArcticApiError(
            f"the agent answered HTTP {status} to {method} {path}: {snippet}", BAD_RESPONSE, status
        )

    def request(self, method: str, path: str, body: t.Any = None, query: dict | None = None,
                auth: bool = True, _retried: bool = False) -> t.Any:
        """Send a JSON request and return the decoded answer (None for an empty one).

        Raises ArcticApiError with the agent's message and code on any non-2xx answer. An expired
        token obtained from client credentials is renewed once, so long plays do not fail at 1 h.
        """
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode("utf-8")
        token = self.token() if auth else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, text = self._send(method, path, data, headers)
        if status >= 400:
            error = self._error_from(method, path, status, text)
            if error.code == "TOKEN_EXPIRED" and self._uses_client_credentials() and not _retried:
                self._token = None
                return self.request(method, path, body, None, auth, _retried=True)
            if error.status == 401 and not token:
                error.message += f" ({NO_CREDENTIALS_HINT})"
            raise error
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise ArcticApiError(
                f"the agent answered {method} {path} with something that is not JSON: {text[:200]}",
                BAD_RESPONSE,
                status,
            ) from None

    def get(self, path: str, **query: t.Any) -> t.Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: t.Any = None) -> t.Any:
        return self.request("POST", path, body if body is not None else {})

    def put(self, path: str, body: t.Any) -> t.Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> t.Any:
        return self.request("DELETE", path)

    # -- authentication ----------------------------------------------------------------------

    def _uses_client_credentials(self) -> bool:
        params = self.module.params
        return not params.get("agent_token") and bool(params.get("client_id") and params.get("client_secret"))

    def token(self) -> str | None:
        """The bearer token: ``agent_token`` as given, else one minted from client credentials."""
        if self._token or not self._uses_client_credentials():
            return self._token
        params = self.module.params
        form = urlencode(
            {"grant_type": "client_credentials", "client_id": params["client_id"],
             "client_secret": params["client_secret"]}
        ).encode("ascii")
        status, text = self._send(
            "POST", "/v1/oauth/token", form,
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        if status >= 400:
            error = self._error_from("POST", "/v1/oauth/token", status, text)
            error.message = f"the agent refused the client credentials of {params['client_id']}: {error.message}"
            raise error
        try:
            self._token = json.loads(text)["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ArcticApiError("the agent's token answer has no access_token", BAD_RESPONSE, status) from None
        return self._token

    # -- lookups -------------------------------------------------------------------------------

    def peers(self) -> list:
        """Every peer this agent knows (cached for the life of the module run)."""
        if self._peers is None:
            self._peers = _as_list(self.get("/v1/peers"), "peers")
        return self._peers

    def resolve_peer(self, ref: str) -> dict:
        """The peer whose id or name is ``ref``; refuses unknown or ambiguous references."""
        peer = find_one(self.peers(), ref, "peer")
        if peer is None:
            known = ", ".join(_describe(p) for p in self.peers()) or "none"
            raise ArcticApiError(f"no peer has id or name {ref!r} (known peers: {known})", "NOT_FOUND", 404)
        return peer

    def services(self, **filters: t.Any) -> list:
        return _as_list(self.get("/v1/services", **filters), "services")

    def find_service(self, ref: str) -> dict | None:
        """The service (detail form, with routes) whose id or name is ``ref``, or None."""
        found = find_one(self.services(), ref, "service")
        return self.service(found["id"]) if found else None

    def service(self, service_id: str) -> dict:
        return self.get(f"/v1/services/{service_id}")

    def resolve_service(self, ref: str) -> dict:
        """Like find_service, but a missing service is an error."""
        found = self.find_service(ref)
        if found is None:
            raise ArcticApiError(f"no service has id or name {ref!r}", "NOT_FOUND", 404)
        return found

    def plan(self, changes: list) -> dict | None:
        """Ask the agent to dry-run ``changes``; None when this agent has no /v1/plan endpoint."""
        try:
            return self.post("/v1/plan", {"changes": changes})
        except ArcticApiError as error:
            if error.status in (404, 405, 501):
                return None
            raise


# --------------------------------------------------------------------------------------------
# Resource lifecycle
# --------------------------------------------------------------------------------------------

ABSENT = {"state": "absent"}


def _plan_errors(plan: dict) -> str:
    errors = plan.get("errors") or []
    texts = []
    for error in errors:
        if isinstance(error, dict):
            texts.append(to_text(error.get("error") or error.get("message") or json.dumps(error, sort_keys=True)))
        else:
            texts.append(to_text(error))
    return "; ".join(texts) or "no reason given"


def plan_peers(plan: dict) -> list:
    """The plan's per-peer part (``peers``), or one built from ``kernel_diff`` for agents that only send that."""
    peers = plan.get("peers")
    if isinstance(peers, list) and all(isinstance(p, dict) and p.get("peer_id") for p in peers):
        return peers
    kernel_diff = plan.get("kernel_diff") or {}
    return [{"peer_id": peer_id, "name": None, "valid": True, "diff": kernel_diff[peer_id], "error": None}
            for peer_id in sorted(kernel_diff)]


def peer_header(peer: dict) -> str:
    """``agent-a (peer_01H...)``: how a peer is named above its part of a diff."""
    name = peer.get("name")
    return f"{name} ({peer['peer_id']})" if name else str(peer["peer_id"])


def prepared_text(peers: list) -> str:
    """Every touched peer's kernel diff as one text, each under a header naming its peer.

    A peer that could not be asked, or that would refuse the change, is listed with the reason instead of a
    diff, so a check-mode run never looks complete when part of it is missing.
    """
    parts = []
    for peer in peers:
        header = f"=== {peer_header(peer)}"
        text = to_text(peer.get("diff") or "")
        if peer.get("error"):
            parts.append(f"{header}: not previewed ===\n# {to_text(peer['error'])}\n")
        elif peer.get("valid") is False:
            reasons = _plan_errors(peer)
            parts.append(f"{header}: would refuse this change ===\n# {reasons}\n")
        elif text.strip():
            if not text.endswith("\n"):
                text += "\n"
            parts.append(f"{header}: kernel changes ===\n{text}")
        else:
            parts.append(f"{header}: no kernel change ===\n")
    return "".join(parts)


class ArcticResource:
    """One agent object managed declaratively: read -> normalise -> compare -> act -> report.

    Subclasses say how to read, normalise, create, update and delete; this class decides whether
    anything must change, never writes in check mode, records every intended write as a plan
    operation (``/v1/plan`` vocabulary) and reports ``changed`` plus ``diff`` before/after.
    """

    #: What the object is called in messages and in the result (``service``, ``route``, ``peer``).
    kind = "object"
    #: Normalised keys that can never change after creation.
    immutable: tuple = ()

    def __init__(self, module: t.Any, client: ArcticClient | None = None):
        self.module = module
        self.client = client or ArcticClient(module)
        self.changed = False
        self.before: dict = dict(ABSENT)
        self.after: dict = dict(ABSENT)
        self.changes: list = []
        #: Set when the agent cannot meaningfully dry-run ``changes`` (says why in the result).
        self.no_plan_reason: str | None = None

    # -- what subclasses provide ------------------------------------------------------------

    def validate(self) -> None:
        """Refuse bad input before any request (default: nothing to check)."""

    def read(self) -> dict | None:
        raise NotImplementedError

    def normalise(self, obj: dict) -> dict:
        """The comparable view of an agent object (same keys as ``desired``)."""
        raise NotImplementedError

    def desired(self, current: dict | None) -> dict:
        """The user's declared values, normalised; keys the user left unset are not managed."""
        raise NotImplementedError

    def create(self, desired: dict) -> dict | None:
        raise NotImplementedError

    def update(self, current: dict, delta: dict, desired: dict) -> dict:
        raise NotImplementedError

    def delete(self, current: dict) -> None:
        raise NotImplementedError

    def describe(self, current: dict | None) -> str:
        return self.kind if current is None else f"{self.kind} {_describe(current)}"

    # -- the lifecycle ------------------------------------------------------------------------

    def record(self, op: str, body: dict | None = None, **refs: t.Any) -> bool:
        """Note an intended write; True when the caller should perform it (not in check mode)."""
        self.changed = True
        change: dict = {"op": op}
        change.update({k: v for k, v in refs.items() if v is not None})
        if body is not None:
            change["body"] = body
        self.changes.append(change)
        return not self.module.check_mode

    def present(self) -> dict | None:
        current = self.read()
        desired = self.desired(current)
        if current is None:
            self.after = dict(desired, state="present")
            return self.create(desired)
        have = self.normalise(current)
        delta = {k: v for k, v in desired.items() if have.get(k) != v}
        for key in self.immutable:
            if key in delta:
                raise ArcticApiError(
                    f"{self.describe(current)} cannot change {key} from {have.get(key)!r} to {delta[key]!r} "
                    "after creation; delete it (state: absent) and create it again",
                    MODULE_REFUSED,
                )
        self.before = dict(have, state="present")
        self.after = dict(have, state="present")
        self.after.update(desired)
        if not delta:
            return current
        return self.update(current, delta, desired)

    def absent(self) -> None:
        current = self.read()
        if current is not None:
            self.before = dict(self.normalise(current), state="present")
            self.delete(current)
        return None

    def run(self, state: str) -> dict:
        """Apply ``state`` and return the module result; agent refusals fail the task."""
        try:
            self.validate()
            obj = self.present() if state == "present" else self.absent()
            result: dict = {"changed": self.changed, self.kind: obj}
            result["diff"] = {"before": self.before, "after": self.after}
            if self.module.check_mode and self.changes:
                result["plan"] = self.dry_run(result["diff"])
            return result
        except ArcticApiError as error:
            error.fail(self.module)

    def dry_run(self, diff: dict) -> dict:
        """Ask the agent what the kernel would see; degrade to the client-side diff without /v1/plan."""
        if self.no_plan_reason:
            return {"available": False, "changes": self.changes, "message": self.no_plan_reason}
        plan = self.client.plan(self.changes)
        if plan is None:
            return {"available": False, "changes": self.changes,
                    "message": "the agent has no /v1/plan endpoint; the diff is computed client-side only"}
        if plan.get("valid") is False:
            raise ArcticApiError(f"the agent would refuse this change: {_plan_errors(plan)}", PLAN_INVALID)
        peers = plan_peers(plan)
        prepared = prepared_text(peers)
        if prepared:
            diff["prepared"] = prepared
        return {"available": True, "changes": self.changes, "valid": True,
                "kernel_diff": plan.get("kernel_diff") or {}, "peers": peers}
