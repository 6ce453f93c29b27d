"""Rendering in one place: aligned tables, key/value blocks, JSON and YAML.

Data goes to stdout. In table mode the human-readable confirmation lines that the product documents
as part of a command's output ("Configuration saved to ...") go to stdout with it; in json/yaml mode
stdout carries only the machine-readable document and those lines move to stderr, so
``arctic ... -j | jq`` always parses. Nothing here colours output (no escape codes in pipes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
import yaml

GAP = "  "


def format_timestamp(value: Any, *, empty: str = "-") -> str:
    """RFC 3339 (any offset) -> ``YYYY-MM-DD HH:MM:SS UTC``; unparseable text is shown as given."""
    if value in (None, ""):
        return empty
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def yes_no(value: Any) -> str:
    return "Yes" if value else "No"


def text_or(value: Any, empty: str = "-") -> str:
    if value is None or value == "":
        return empty
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else empty
    return str(value)


def bytes_text(count: Any) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, one decimal, as ``ip -h -s link`` prints them."""
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def bitrate_text(bps: Any) -> str:
    """``12_500_000`` -> ``12.5 Mbit/s``: decimal units, as link speeds and limits are given."""
    value = float(bps or 0)
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if value < 1000 or unit == "Gbit/s":
            return f"{int(value)} {unit}" if unit == "bit/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} Gbit/s"


def render_kv(rows: Sequence[tuple[str, Any]], *, width: int | None = None) -> str:
    """``Label:  value`` lines with values aligned.

    ``width`` is the column where values start; by default two spaces after the longest label.
    Some documented outputs use a wider column, and those commands pass it explicitly.
    """
    if not rows:
        return ""
    col = width if width is not None else max(len(label) + 1 for label, _ in rows) + 2
    lines = []
    for label, value in rows:
        head = f"{label}:"
        lines.append(f"{head.ljust(max(col, len(head) + 1))}{text_or(value)}".rstrip())
    return "\n".join(lines)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain columns separated by two spaces; the last column is not padded."""
    body = [[text_or(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) if i < len(cells) - 1 else c for i, c in enumerate(cells)]
        return GAP.join(padded).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in body)])


def dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(data, indent=2, sort_keys=False)


class Output:
    """Writes a command's result in the chosen format (``table`` | ``wide`` | ``json`` | ``yaml``)."""

    def __init__(self, fmt: str = "table") -> None:
        self.format = fmt

    @property
    def machine(self) -> bool:
        return self.format in ("json", "yaml")

    @property
    def wide(self) -> bool:
        """``-o wide``: a table with more columns (commands without any print their usual table)."""
        return self.format == "wide"

    def emit(self, data: Any, table: Callable[[Any], str] | None = None) -> None:
        """Machine formats dump ``data`` verbatim; table mode prints ``table(data)``."""
        if self.machine or table is None:
            click.echo(dump(data, self.format if self.machine else "json"))
            return
        text = table(data)
        if text:
            click.echo(text)

    def human(self, text: str) -> None:
        """A documented human line: stdout in table mode, stderr when stdout carries JSON/YAML."""
        click.echo(text, err=self.machine)

    @staticmethod
    def message(text: str) -> None:
        """Progress and notices: always stderr."""
        click.echo(text, err=True)
