-- The tables as the embedded store first kept them. IF NOT EXISTS: a store file made before its
-- schema was versioned (user_version 0) has them already, and is adopted by these migrations.

CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    budget_micros INTEGER, allow TEXT NOT NULL, rpm INTEGER
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id), key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS rate_limits (bucket TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spend (project_id TEXT PRIMARY KEY, spent_micros INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, amount_micros INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_project ON reservations(project_id, expires_at);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL, project_id TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT NOT NULL, n_requested INTEGER NOT NULL, images_returned INTEGER NOT NULL,
    size TEXT NOT NULL, quality TEXT NOT NULL, cost_micros INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    upstream_latency_ms INTEGER NOT NULL, outcome TEXT NOT NULL, created_at REAL NOT NULL,
    idempotency_key TEXT NOT NULL, upstream_request_id TEXT NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_by_project ON ledger(project_id, created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    project_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
    owner TEXT NOT NULL, lease_expires_at REAL NOT NULL, response BLOB NOT NULL, error TEXT NOT NULL,
    expires_at REAL NOT NULL, PRIMARY KEY (project_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency(expires_at);
-- Readiness writes here: a store that reads but cannot write serves no generation.
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
