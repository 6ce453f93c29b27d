"""Replicated state: signed envelopes, last-writer-wins merge, digests and the registry hash.

Each local write is turned into envelopes inside the same SQLite transaction (``before_commit``),
signed with the local identity. Remote envelopes are accepted only when (1) the author's signature
verifies against a trusted peer key and (2) the author may change that record (a service's source
peer for services and their routes, a peer for its own record; a revocation may come from any
trusted peer and is final). Merge is deterministic: the higher ``(version, author)`` wins, a
deletion wins a tie, so every peer converges to the same state whatever the delivery order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import asdict, dataclass

from arctic.cluster import records
from arctic.cluster.identity import verify_signature
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.database import Database, Transaction

log = get_logger("cluster")


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
    def rank(self) -> tuple:
        return (self.version, self.deleted, self.author)

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
        db.before_commit(self._sign_local_changes)

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
        if author.state == "revoked":
            raise Rejected(f"author {env.author} was revoked")
        if not verify_signature(author.public_key, env.signed_part(), base64.b64decode(env.sig)):
            raise Rejected(f"bad signature on {env.kind} {env.id} claimed by {env.author}")
        current = stored(conn, env.kind, env.id)
        if env.kind == "service":
            owners = {records.owner_of(conn, "service", env.id, env.body)}
            if current is not None and current.body is not None:
                owners.add(current.body["source_peer_id"])
            if owners != {env.author}:
                raise Rejected(f"{env.author} may not change service {env.id} (owned by its source peer)")
        elif env.kind == "peer":
            was_revoked = current is not None and current.body is not None and current.body["state"] == "revoked"
            if was_revoked and not (env.body and env.body["state"] == "revoked"):
                raise Rejected(f"peer {env.id} was revoked; revocation is final")
            revoking = env.body is not None and env.body["state"] == "revoked"
            if env.author != env.id and not revoking:
                raise Rejected(f"{env.author} may not change peer record {env.id}")
            if env.body is not None and current is not None and current.body is not None and \
                    env.body["public_key"] != current.body["public_key"]:
                raise Rejected(f"peer {env.id} cannot change its identity key")

    def accept(self, envelopes: list[Envelope], local_peer_id: str) -> tuple[int, int]:
        """Apply what is newer; returns (applied, rejected). Rejections are logged with their reason."""
        applied = rejected = 0
        with self.db.write() as tx:
            tx.replicated = True
            for env in envelopes:
                current = stored(tx, env.kind, env.id)
                if current is not None and current.rank >= env.rank:
                    continue
                if env.kind == "peer" and repo.get_peer(tx, env.id) is None:
                    continue  # a peer we have not met: discovery handshakes it first
                try:
                    self.check(tx, env)
                except Rejected as err:
                    rejected += 1
                    emit = log.info if err.deferred else log.warning
                    emit("replicated change refused", reason=str(err), kind=env.kind, id=env.id, author=env.author)
                    continue
                _put(tx, env)
                records.materialise(tx, env.kind, env.id, env.body, local_peer_id)
                applied += 1
        return applied, rejected

    # -- anti-entropy ------------------------------------------------------------------------
    def digest(self) -> dict[str, list]:
        """``{"kind/id": [version, deleted, author]}`` for every record."""
        rows = self.db.read().execute("SELECT kind, id, version, deleted, author FROM replica").fetchall()
        return {f"{r['kind']}/{r['id']}": [r["version"], bool(r["deleted"]), r["author"]] for r in rows}

    def newer_than(self, their_digest: dict) -> list[Envelope]:
        """Envelopes the other side lacks or has older."""
        out = []
        for row in self.db.read().execute("SELECT * FROM replica").fetchall():
            env = Envelope.from_row(row)
            theirs = their_digest.get(f"{env.kind}/{env.id}")
            if theirs is None or tuple(theirs) < env.rank:
                out.append(env)
        return out

    def wanted_from(self, their_digest: dict) -> list[str]:
        mine = self.digest()
        return [key for key, rank in their_digest.items()
                if isinstance(rank, list) and len(rank) == 3 and (key not in mine or tuple(mine[key]) < tuple(rank))]

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
