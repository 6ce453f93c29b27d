-- Schema 2: replicated records and per-peer liveness.
-- Every replicated record (peer, service with its routes, credential) has one signed envelope here:
-- the author's Ed25519 signature over (kind, id, version, author, deleted, body). Relays forward
-- envelopes unchanged, so a peer can check who wrote a change no matter who delivered it.
CREATE TABLE replica (
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    version  INTEGER NOT NULL,      -- microseconds, hybrid clock: max(now, previous + 1)
    author   TEXT NOT NULL,         -- peer id that wrote this version
    deleted  INTEGER NOT NULL DEFAULT 0,
    body     TEXT,                  -- canonical JSON of the record, NULL when deleted
    sig      TEXT NOT NULL,         -- base64 Ed25519 signature by author
    PRIMARY KEY (kind, id)
);

-- Local observations about other peers (never replicated).
CREATE TABLE peer_health (
    peer_id        TEXT PRIMARY KEY,
    reachable      INTEGER,           -- NULL = not contacted yet
    last_seen      TEXT,
    failures       INTEGER NOT NULL DEFAULT 0,
    next_attempt   REAL NOT NULL DEFAULT 0,   -- unix time of the next retry (back-off)
    registry_hash  TEXT,
    last_error     TEXT
);

-- Peers learned through gossip but not yet handshaken (transitive discovery).
CREATE TABLE peer_candidates (
    peer_id     TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    learned_from TEXT,
    learned_at  TEXT NOT NULL
);
