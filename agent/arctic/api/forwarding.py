"""'Any agent answers': a write about another peer's records is forwarded to that peer.

Only a record's owner may author changes to it (a service's source peer, a peer's own record), so
agents forward such requests with the caller's own bearer token (valid on every peer). After a
successful forwarded write the agent pulls from the owner at once, so the caller can read its write
back from the agent it talked to.

Exception: once a service's source peer has left (``remove-self``) or was revoked, nobody can
forward to it, so any agent may delete that service itself (its tombstone is accepted everywhere).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, g, request

from arctic.api.endpoint import agent
from arctic.api.lookup import find_service
from arctic.cluster import transport
from arctic.errors import ApiError, Forbidden
from arctic.logs import get_logger
from arctic.store import repository as repo

log = get_logger("api")
FORWARD_HEADER = "X-Arctic-Forwarded-By"


def owner_answers(owner: Callable[..., str], *, parse: Callable[[], Any] | None = None,
                  local_if_owner_left: bool = False) -> Callable:
    """A handler that only the owner of the record it changes may run: forwarded there unless that is this agent.

    In order: ``parse()`` (when given) reads and validates the request body, so a bad body is refused here (400)
    without asking the owner, and its result reaches the handler as ``body``; ``owner(**kwargs)`` names the owner
    from the URL arguments (and ``body``), raising 404 for a record unknown here; then ``forward_to``. Goes below
    ``@endpoint(...)``, which authenticates and licence-gates first and carries the OpenAPI metadata.
    """

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(**kwargs):
            if parse is not None:
                kwargs["body"] = parse()
            forwarded = forward_to(owner(**kwargs), local_if_owner_left=local_if_owner_left)
            if forwarded is not None:
                return forwarded
            return view(**kwargs)

        return wrapper

    return decorate


def service_owner(service_id: str, **_) -> str:
    """The owner of a service and its routes: its source peer (404 when the service is unknown here)."""
    return find_service(service_id).source_peer_id


def forward_to(owner_peer_id: str, *, local_if_owner_left: bool = False) -> Response | None:
    """Forward the current request to ``owner_peer_id`` unless that is this agent (then None).

    ``local_if_owner_left``: when the owner was revoked or removed itself, handle the request here instead
    (None) of refusing it; only deleting such a peer's services may do so (see the module docstring).
    """
    runtime = agent()
    if owner_peer_id == runtime.local_peer_id:
        return None
    peer = repo.get_peer(runtime.db.read(), owner_peer_id)
    if peer is not None and not peer.is_member and local_if_owner_left:
        return None
    if peer is None or not peer.is_member:
        raise ApiError(f"owner peer {owner_peer_id} is not an active member of this cluster",
                       code="PEER_UNREACHABLE", status=422)
    if request.headers.get(FORWARD_HEADER):
        raise ApiError(f"request was already forwarded by {request.headers[FORWARD_HEADER]}; refusing to forward "
                       "again (replicated state still converging; retry shortly)", code="PEER_UNREACHABLE",
                       status=422)
    if getattr(g, "principal", None) is not None and g.principal.via == "recovery":
        raise Forbidden(f"the recovery token only authorises this agent; send this request to {peer.address}")
    headers = {FORWARD_HEADER: runtime.local_peer_id, "Content-Type": request.content_type or "application/json"}
    if request.headers.get("Authorization"):
        headers["Authorization"] = request.headers["Authorization"]
    try:
        resp = transport.raw(peer.address, request.method, request.path, headers=headers, data=request.get_data(),
                             params=request.args, timeout=30)
    except Exception as err:  # noqa: BLE001 - any transport failure means "owner unreachable"
        raise ApiError(f"this change must be made by peer {peer.name or peer.id} ({peer.address}), which is "
                       f"unreachable: {type(err).__name__}", code="PEER_UNREACHABLE", status=422) from None
    log.info("request forwarded to owner", method=request.method, path=request.path, owner=peer.id,
             status=resp.status_code)
    if resp.status_code < 300 and runtime.gossiper is not None:
        try:
            runtime.gossiper.sync_with(peer)
        except Exception as err:  # noqa: BLE001 - replication will catch up on its own
            log.warning("read-your-write sync with owner failed", owner=peer.id, error=str(err))
    forwarded = Response(resp.content, status=resp.status_code, content_type=resp.headers.get("Content-Type"))
    if resp.headers.get("Warning"):
        forwarded.headers["Warning"] = resp.headers["Warning"]  # the owner's notices reach the caller too
    return forwarded
