"""Replicated state: signed envelopes, last-writer-wins merge, digests and the registry hash.

Each local write is turned into envelopes inside the same SQLite transaction (``before_commit``),
signed with the local identity. Remote envelopes are accepted only when (1) the author's signature
verifies against a trusted peer key and (2) the author may change that record (a service's source
peer for services and their routes, a peer for its own record; a revocation may come from any
trusted peer and is final). Merge is deterministic: records are ordered by their *rank*
``(final, version, deleted, author)``, the higher rank wins, so every peer converges to the same
state whatever the delivery order:

* ``final`` is set only on a peer revocation, so a revocation beats every later-looking update of
  that peer record (revocation is final, even against a peer whose clock runs ahead);
* ``version`` is a hybrid clock (microseconds, ``max(now, previous + 1)``) from the author;
* ``deleted`` makes a deletion win a tie with an update of the same version (deletes win);
* ``author`` breaks the remaining ties between two peers that wrote the same version.

A revoked peer cannot send anything any more (its gossip, handshakes and tokens are refused), but
the records it signed before the revocation reached everyone are still relayed and accepted: every
peer must end with the same set, whichever it heard first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from arctic.cluster import records
from arctic.cluster.identity import verify_signature
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.database import Database, Transaction

log = get_logger("cluster")
FUTURE_LIMIT_US = 300 * 1_000_000  # a version further ahead than this is someone's broken clock


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Envelope:
    kind: str
    id: str
    version: int
    author: str
    deleted: bool
    body: dict | None
    sig: str

    def signed_part(self) -> bytes:
        return canonical({"kind": self.kind, "id": self.id, "version": self.version, "author": self.author,
                          "deleted": self.deleted, "body": self.body})

    @property
    def is_revocation(self) -> bool:
        return self.kind == "peer" and self.body is not None and self.body.get("state") == "revoked"

    @property
    def rank(self) -> tuple:
        """Merge order: the higher rank wins (see the module docstring)."""
        return (self.is_revocation, self.version, self.deleted, self.author)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict) -> Envelope:
        if not isinstance(data, dict):
            raise ValueError("record must be an object")
        env = cls(kind=str(data["kind"]), id=str(data["id"]), version=int(data["version"]),
                  author=str(data["author"]), deleted=bool(data["deleted"]), body=data.get("body"),
                  sig=str(data["sig"]))
        if env.kind not in records.KINDS:
            raise ValueError(f"unknown record kind {env.kind!r}")
        if (env.body is None) != env.deleted:
            raise ValueError("a record has a body exactly when it is not deleted")
        if env.body is not None and not isinstance(env.body, dict):
            raise ValueError("a record body must be an object")
        return env

    @classmethod
    def from_row(cls, row) -> Envelope:
        return cls(row["kind"], row["id"], row["version"], row["author"], bool(row["deleted"]),
                   json.loads(row["body"]) if row["body"] is not None else None, row["sig"])


class Rejected(Exception):
    """An envelope that must not be applied; the reason is logged.

    ``deferred`` marks the benign case of a record written by a peer we have not handshaken yet: it
    arrives again through anti-entropy once discovery has met that peer.
    """

    def __init__(self, reason: str, *, deferred: bool = False):
        super().__init__(reason)
        self.deferred = deferred


def _now_us() -> int:
    return time.time_ns() // 1000


def parse_rank(value: object) -> tuple | None:
    """A rank as it travels in a digest (``[final, version, deleted, author]``); None when malformed."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    final, version, deleted, author = value
    if not isinstance(version, int) or not isinstance(author, str) or not isinstance(final, (bool, int)) \
            or not isinstance(deleted, (bool, int)):
        return None
    return (bool(final), version, bool(deleted), author)




def stored(conn, kind: str, record_id: str) -> Envelope | None:
    row = conn.execute("SELECT * FROM replica WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
    return Envelope.from_row(row) if row else None


def _put(tx: Transaction, env: Envelope) -> None:
    tx.execute(
        "INSERT INTO replica (kind, id, version, author, deleted, body, sig) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(kind, id) DO UPDATE SET version = excluded.version, author = excluded.author,"
        " deleted = excluded.deleted, body = excluded.body, sig = excluded.sig",
        (env.kind, env.id, env.version, env.author, int(env.deleted),
         json.dumps(env.body, sort_keys=True) if env.body is not None else None, env.sig),
    )


class Replicator:
    """Owns the envelopes of this peer's store; the gossip layer moves them between peers."""

    KIND_OF_TABLE = {"services": "service", "peers": "peer", "credentials": "credential"}

    def __init__(self, db: Database, identity_provider, local_peer_provider):
        self.db = db
        self._identity = identity_provider
        self._local_peer = local_peer_provider
        self.outbox: list[Envelope] = []
        self.on_outbox: Callable[[], None] | None = None  # the gossiper's "push now" (set by it)
        db.before_commit(self._sign_local_changes)
        db.on_commit(self._after_commit)

    # -- local writes ------------------------------------------------------------------------
    def _sign_local_changes(self, tx: Transaction) -> None:
        if tx.replicated or not tx.records:
            return
        identity = self._identity()
        author = repo.get_meta(tx, "local_peer_id")
        if identity is None or author is None:
            return
        for table, record_id in sorted(tx.records):
            kind = self.KIND_OF_TABLE.get(table)
            if kind is None:
                continue
            body = records.snapshot(tx, kind, record_id)
            previous = stored(tx, kind, record_id)
            version = max(_now_us(), (previous.version + 1) if previous else 0)
            unsigned = Envelope(kind, record_id, version, author, body is None, body, "")
            sig = base64.b64encode(identity.sign(unsigned.signed_part())).decode()
            env = Envelope(kind, record_id, version, author, body is None, body, sig)
            _put(tx, env)
            self.outbox.append(env)

    def _after_commit(self, _changed: set[str]) -> None:
        if self.outbox and self.on_outbox is not None:
            self.on_outbox()

    def reseal_all(self) -> None:
        """Sign envelopes for every record that has none yet (first start after an upgrade)."""
        conn = self.db.read()
        with self.db.write() as tx:
            for kind, table, key in (("peer", "peers", "id"), ("service", "services", "id"),
                                     ("credential", "credentials", "client_id")):
                for row in conn.execute(f"SELECT {key} FROM {table}").fetchall():
                    if stored(conn, kind, row[0]) is None:
                        tx.touch(f"{kind}s" if kind != "credential" else "credentials", row[0])

    def take_outbox(self) -> list[Envelope]:
        out, self.outbox = self.outbox, []
        return out

    # -- remote changes ----------------------------------------------------------------------
    def check(self, conn, env: Envelope) -> None:
        """Raise ``Rejected`` unless ``env`` is authentic and its author may make this change."""
        author = repo.get_peer(conn, env.author)
        if author is None:
            raise Rejected(f"author {env.author} is not a peer we have met yet", deferred=True)
        if env.version > _now_us() + FUTURE_LIMIT_US:
            raise Rejected(f"{env.kind} {env.id} carries a version from the future (clock of {env.author} "
                           "is ahead?)", deferred=True)
        try:
            signature = base64.b64decode(env.sig, validate=True)
        except ValueError:
            signature = b""
        if not verify_signature(author.public_key, env.signed_part(), signature):
            raise Rejected(f"bad signature on {env.kind} {env.id} claimed by {env.author}")
        current = stored(conn, env.kind, env.id)
        if env.kind == "service":
            self._check_service(conn, env, current)
        elif env.kind == "peer":
            self._check_peer(env, current)

    @staticmethod
    def _check_service(conn, env: Envelope, current: Envelope | None) -> None:
        """Only a service's source peer writes it; anyone may delete it once that peer has left."""
        current_owner = current.body["source_peer_id"] if current is not None and current.body else None
        claimed = env.body["source_peer_id"] if env.body is not None else None
        if claimed is not None and current_owner is not None and claimed != current_owner:
            raise Rejected(f"{env.author} tried to change the source peer of service {env.id}")
        owner = claimed or current_owner
        if owner is None or owner == env.author:
            return  # a create by its owner, or the tombstone of a service this peer never saw
        owner_peer = repo.get_peer(conn, owner)
        if env.deleted and owner_peer is not None and not owner_peer.is_member:
            return  # cleaning up after a peer that left or was revoked
        raise Rejected(f"{env.author} may not change service {env.id} (owned by its source peer {owner})")

    @staticmethod
    def _check_peer(env: Envelope, current: Envelope | None) -> None:
        """A peer writes its own record; any trusted peer may revoke it, and a revocation is final."""
        was_revoked = current is not None and current.is_revocation
        if was_revoked and not env.is_revocation:
            raise Rejected(f"peer {env.id} was revoked; revocation is final")
        if env.author != env.id and not env.is_revocation:
            raise Rejected(f"{env.author} may not change peer record {env.id}")
        if env.body is not None and current is not None and current.body is not None and \
                env.body.get("public_key") != current.body.get("public_key"):
            raise Rejected(f"peer {env.id} cannot change its identity key")

    def accept(self, envelopes: list[Envelope], local_peer_id: str | None) -> tuple[int, int]:
        """Apply what ranks higher than what we hold; returns (applied, rejected).

        Rejections are logged with their reason (WARN, except the benign "not met yet" ones, which
        anti-entropy brings back once discovery has handshaken the author).
        """
        applied = rejected = 0
        with self.db.write() as tx:
            tx.replicated = True
            for env in envelopes:
                current = stored(tx, env.kind, env.id)
                if current is not None and current.rank >= env.rank:
                    continue
                if env.kind == "peer" and not env.is_revocation and repo.get_peer(tx, env.id) is None:
                    continue  # a peer we have not met: discovery handshakes it first
                tx.execute("SAVEPOINT record")
                try:
                    self.check(tx, env)
                    _put(tx, env)
                    records.materialise(tx, env.kind, env.id, env.body, local_peer_id)
                except (Rejected, KeyError, TypeError, ValueError, sqlite3.IntegrityError) as err:
                    tx.execute("ROLLBACK TO record")
                    tx.execute("RELEASE record")
                    rejected += 1
                    deferred = isinstance(err, Rejected) and err.deferred
                    reason = str(err) if isinstance(err, Rejected) else f"malformed {env.kind} record ({err!r})"
                    emit = log.info if deferred else log.warning
                    emit("replicated change refused", reason=reason, kind=env.kind, id=env.id, author=env.author)
                    continue
                tx.execute("RELEASE record")
                if env.is_revocation:
                    tx.execute("DELETE FROM peer_candidates WHERE peer_id = ?", (env.id,))
                    if env.id == local_peer_id:
                        log.warning("this peer was revoked from the cluster", revoked_by=env.author)
                applied += 1
        return applied, rejected

    # -- anti-entropy ------------------------------------------------------------------------
    def digest(self) -> dict[str, list]:
        """``{"kind/id": [final, version, deleted, author]}`` (the rank) for every record."""
        rows = self.db.read().execute(
            "SELECT kind, id, version, deleted, author, (kind = 'peer' AND body IS NOT NULL AND"
            " json_extract(body, '$.state') = 'revoked') AS final FROM replica").fetchall()
        return {f"{r['kind']}/{r['id']}": [bool(r["final"]), r["version"], bool(r["deleted"]), r["author"]]
                for r in rows}

    def newer_than(self, their_digest: dict) -> list[Envelope]:
        """Envelopes the other side lacks or has older."""
        out = []
        for row in self.db.read().execute("SELECT * FROM replica").fetchall():
            env = Envelope.from_row(row)
            theirs = parse_rank(their_digest.get(f"{env.kind}/{env.id}"))
            if theirs is None or theirs < env.rank:
                out.append(env)
        return out

    def wanted_from(self, their_digest: dict) -> list[str]:
        """Keys the other side holds a higher rank of than we do."""
        mine = {key: parse_rank(rank) for key, rank in self.digest().items()}
        wanted = []
        for key, value in their_digest.items():
            rank = parse_rank(value)
            if rank is not None and isinstance(key, str) and (key not in mine or mine[key] < rank):
                wanted.append(key)
        return wanted

    def envelopes(self, keys: list[str]) -> list[Envelope]:
        out = []
        conn = self.db.read()
        for key in keys:
            kind, _, record_id = key.partition("/")
            env = stored(conn, kind, record_id)
            if env is not None:
                out.append(env)
        return out

    def registry_hash(self) -> str:
        """Equal on two peers exactly when they hold the same versions of the same records."""
        rows = self.db.read().execute(
            "SELECT kind, id, version, author, deleted FROM replica ORDER BY kind, id").fetchall()
        return hashlib.sha256(canonical([list(r) for r in rows])).hexdigest()
