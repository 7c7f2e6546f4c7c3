-- The admin API: what each reservation is held for (so the generations in flight can be listed),
-- the audit log of admin changes, and the upstream slots of a provider's max_in_flight.

ALTER TABLE reservations ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE reservations ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE reservations ADD COLUMN started_at REAL NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS upstream_slots (
    pool TEXT NOT NULL, slot INTEGER NOT NULL, holder TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (pool, slot)
);
