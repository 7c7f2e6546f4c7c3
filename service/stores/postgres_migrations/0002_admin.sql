-- The admin API: what each reservation is held for (so the generations in flight on every replica
-- can be listed), and the audit log of admin changes.

ALTER TABLE reservations
    ADD COLUMN key_id text NOT NULL DEFAULT '',
    ADD COLUMN model text NOT NULL DEFAULT '',
    ADD COLUMN started_at double precision NOT NULL DEFAULT 0;

CREATE TABLE audit (
    id text PRIMARY KEY,  -- aud_<ULID>: sorts by time
    at double precision NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL
);

-- The ledger read a page at a time, newest first, optionally of one model or outcome.
CREATE INDEX ledger_by_model ON ledger (model, seq);
CREATE INDEX ledger_by_outcome ON ledger (outcome, seq);
