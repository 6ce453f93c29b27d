-- Arctic store, schema 1: the services/routes model, peers, credentials, cluster metadata.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
);

CREATE TABLE peers (
    id          TEXT PRIMARY KEY,       -- peer_<ULID>
    name        TEXT NOT NULL DEFAULT '',
    public_key  TEXT NOT NULL,          -- base64 raw Ed25519
    address     TEXT NOT NULL,          -- host:port of its API
    is_local    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'active',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE services (
    id                   TEXT PRIMARY KEY,   -- svc_<ULID>
    name                 TEXT UNIQUE,
    source_peer_id       TEXT NOT NULL,
    target_peer_id       TEXT NOT NULL,
    transport_type       TEXT NOT NULL CHECK (transport_type IN ('tcp', 'kcp')),
    requires_interface   INTEGER NOT NULL,
    desired_ipv4_cidr    TEXT,
    desired_ipv6_cidr    TEXT,
    fully_transparent    INTEGER NOT NULL,
    bandwidth_limit_mbps INTEGER NOT NULL CHECK (bandwidth_limit_mbps >= 0),
    interface_name       TEXT,
    interface_mac        TEXT,
    interface_ipv4_cidr  TEXT,
    interface_ipv6_cidr  TEXT,
    next_route_id        INTEGER NOT NULL DEFAULT 1,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX services_by_source ON services (source_peer_id);
CREATE INDEX services_by_target ON services (target_peer_id);

CREATE TABLE routes (
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    id          INTEGER NOT NULL,       -- per service, never reused
    priority    INTEGER NOT NULL,
    source_cidr TEXT,
    dest_cidr   TEXT,
    seq         INTEGER NOT NULL,       -- creation time in microseconds: "older route wins" tie-break
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (service_id, id),
    CHECK (source_cidr IS NOT NULL OR dest_cidr IS NOT NULL)
);
CREATE UNIQUE INDEX routes_unique_match ON routes (service_id, ifnull(source_cidr, ''), ifnull(dest_cidr, ''));

CREATE TABLE credentials (
    client_id            TEXT PRIMARY KEY,  -- cli_<ULID>
    secret_hash          TEXT NOT NULL,
    previous_secret_hash TEXT,              -- cluster credential: still valid until previous_valid_until
    previous_valid_until TEXT,
    scopes               TEXT NOT NULL,     -- JSON list of URNs
    license_id           TEXT NOT NULL,
    is_cluster           INTEGER NOT NULL DEFAULT 0,
    version              INTEGER NOT NULL DEFAULT 1,
    rotated_by           TEXT,
    rotated_at           TEXT,
    created_at           TEXT NOT NULL,
    last_used_at         TEXT,
    revoked_at           TEXT
);
