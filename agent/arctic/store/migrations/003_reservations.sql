-- Schema 3: cluster-wide licence slots handed out by the coordinator (local bookkeeping, never replicated).
CREATE TABLE IF NOT EXISTS cluster_reservations (
    kind       TEXT NOT NULL,              -- service | node
    id         TEXT NOT NULL,              -- the service id or peer id the slot is for
    requester  TEXT NOT NULL,              -- peer that asked
    safe_zone  INTEGER NOT NULL DEFAULT 0, -- 1: taken by this peer without the coordinator
    expires_at REAL NOT NULL,              -- unix time
    PRIMARY KEY (kind, id)
);
