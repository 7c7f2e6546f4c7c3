-- The first schema: projects, keys, rate limits, spend and its reservations, the ledger, and
-- idempotency records. Times are seconds since the epoch (double precision), money micro-dollars.

CREATE TABLE projects (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    budget_micros bigint,
    allow text[] NOT NULL,
    rpm integer
);

CREATE TABLE keys (
    id text PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id),
    key_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    created_at double precision NOT NULL,
    revoked_at double precision
);
CREATE INDEX keys_by_project ON keys (project_id, created_at);

-- GCRA state: one theoretical arrival time per bucket, and whether the last hit was allowed (what
-- the hit's own statement returns: RETURNING sees only the row as it leaves it).
CREATE TABLE rate_limits (bucket text PRIMARY KEY, tat double precision NOT NULL, allowed boolean NOT NULL);

-- What a project has spent, and the sum of its reservations (live, or lapsed and not yet reclaimed).
CREATE TABLE spend (
    project_id text PRIMARY KEY,
    spent_micros bigint NOT NULL,
    reserved_micros bigint NOT NULL
);

CREATE TABLE reservations (
    id text PRIMARY KEY,
    project_id text NOT NULL,
    amount_micros bigint NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX reservations_by_expiry ON reservations (project_id, expires_at);
CREATE INDEX reservations_expiry ON reservations (expires_at);

CREATE TABLE ledger (
    seq bigserial PRIMARY KEY,
    request_id text NOT NULL,
    project_id text NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    n_requested integer NOT NULL,
    images_returned integer NOT NULL,
    size text NOT NULL,
    quality text NOT NULL,
    cost_micros bigint NOT NULL,
    input_tokens bigint NOT NULL,
    upstream_latency_ms bigint NOT NULL,
    outcome text NOT NULL,
    created_at double precision NOT NULL,
    idempotency_key text NOT NULL,
    upstream_request_id text NOT NULL,
    extra jsonb NOT NULL
);
CREATE INDEX ledger_by_project ON ledger (project_id, created_at);
CREATE INDEX ledger_by_time ON ledger (created_at);

CREATE TABLE idempotency (
    project_id text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    state text NOT NULL,
    owner text NOT NULL,
    lease_expires_at double precision NOT NULL,
    response bytea NOT NULL,
    error text NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (project_id, key)
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);

-- Readiness writes here: a database that reads but cannot write serves no generation.
CREATE TABLE write_probe (id integer PRIMARY KEY, at double precision NOT NULL);
