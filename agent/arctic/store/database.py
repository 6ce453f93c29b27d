"""SQLite store: one file in the data dir, WAL, ``synchronous=FULL``.

``synchronous=FULL`` means a write that the API acknowledged survives ``kill -9`` and power loss.
Writes take ``BEGIN IMMEDIATE`` so that check-then-insert rules (licence limits, unique names) are
serialised between the API's worker threads. Listeners registered with ``on_commit`` learn which
record kinds changed (the reconciler and replication react to them).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from arctic.logs import get_logger

log = get_logger("store")


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("arctic.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text()))
    return sorted(found)


class Database:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._listeners: list[Callable[[set[str]], None]] = []
        self._before_commit: list[Callable[[Transaction], None]] = []
        self._migrate()

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema ------------------------------------------------------------------------------
    def _migrate(self) -> None:
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, name))
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise
            log.info("applied schema migration", version=version, name=name)

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A serialised write transaction; commits on success, rolls back on any exception."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        tx = Transaction(conn)
        try:
            yield tx
            for hook in self._before_commit:
                hook(tx)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if tx.changed:
            for listener in list(self._listeners):
                try:
                    listener(set(tx.changed))
                except Exception:  # a listener must never undo an acknowledged write
                    log.exception("change listener failed")

    def read(self) -> sqlite3.Connection:
        return self.conn

    def on_commit(self, listener: Callable[[set[str]], None]) -> None:
        """Run ``listener(changed_kinds)`` after each commit that changed something."""
        self._listeners.append(listener)

    def before_commit(self, hook: Callable[[Transaction], None]) -> None:
        """Run ``hook(tx)`` inside each write transaction, just before COMMIT (replication signs here)."""
        self._before_commit.append(hook)


class Transaction:
    """Thin wrapper that records which kinds of record a write touched."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.changed: set[str] = set()
        self.records: set[tuple[str, str]] = set()
        self.replicated = False  # True while applying changes received from a peer

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def touch(self, kind: str, record_id: str | None = None) -> None:
        """Note that ``kind`` (and, when given, the record ``record_id``) changed in this transaction."""
        self.changed.add(kind)
        if record_id is not None:
            self.records.add((kind, record_id))


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (our migrations contain no triggers or strings with ';')."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
