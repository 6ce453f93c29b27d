"""Small helpers several command modules need (peer-name lookup, reading licence files)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arctic.cli.client import ApiClient
from arctic.cli.errors import ApiCallError, CliError


def peer_names(client: ApiClient) -> dict[str, str]:
    """Peer id -> name, for showing names instead of ids.

    Best effort: a credential without peers.read still gets its table, with ids instead of names.
    """
    try:
        peers = client.get("/v1/peers")
    except ApiCallError:
        return {}
    if isinstance(peers, dict):  # tolerate a wrapped list
        peers = peers.get("peers", [])
    return {str(p.get("id")): str(p.get("name") or "") for p in peers or [] if isinstance(p, dict)}


def name_or_id(names: dict[str, str], peer_id: Any) -> str:
    if not peer_id:
        return "-"
    return names.get(str(peer_id)) or str(peer_id)


def read_licence_file(path: Path) -> dict[str, Any]:
    """The signed licence document (the contents of license.json) as a dict."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"failed to read license file: {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CliError(f"failed to read license file: {path} is not valid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict):
        raise CliError(f"failed to read license file: {path} must contain a JSON object")
    return doc


def route_table(routes: list[dict[str, Any]]) -> str:
    """``ID  PRIORITY  SOURCE CIDR  DEST CIDR``, in the order the API gave (precedence order), and ``STATE`` when
    the agent gives it (``routes list``): ``active`` or ``shadowed by <service> route <id>``."""
    from arctic.cli.output import render_table

    header = ["ID", "PRIORITY", "SOURCE CIDR", "DEST CIDR"]
    rows = [[r.get("id"), r.get("priority"), r.get("source_cidr"), r.get("dest_cidr")] for r in routes]
    if any("state" in r for r in routes):
        header.append("STATE")
        for row, r in zip(rows, routes, strict=True):
            by = r.get("shadowed_by") or {}
            row.append(f"shadowed by {by.get('service_id')} route {by.get('route_id')}"
                       if r.get("state") == "shadowed" else r.get("state", "-"))
    return render_table(header, rows)


_FLAG_OF_FIELD = {"source_cidr": "--source-cidr", "dest_cidr": "--dest-cidr",
                  "desired_ipv4_cidr": "--desired-ipv4", "desired_ipv6_cidr": "--desired-ipv6"}
_FIELD_PATH = re.compile(r"\b(?:routes\.\d+\.)?(" + "|".join(_FLAG_OF_FIELD) + r")\b")


@contextlib.contextmanager
def cidr_errors_name_the_flags() -> Iterator[None]:
    """The agent names a bad CIDR by its JSON path (``routes.0.source_cidr``); the operator typed a flag
    (``--source-cidr``), so the CLI says that, after the documented ``invalid CIDR notation``."""
    try:
        yield
    except ApiCallError as err:
        if err.code != "INVALID_CIDR":
            raise
        text = _FIELD_PATH.sub(lambda m: _FLAG_OF_FIELD[m.group(1)], str(err))
        if not text.startswith("invalid CIDR notation"):
            text = f"invalid CIDR notation: {text}"
        raise ApiCallError(err.status, err.code, text) from None
