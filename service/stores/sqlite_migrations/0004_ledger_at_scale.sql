-- The ledger read at scale: usage aggregated in the database from an index that holds every column
-- it sums (so a large ledger is read from the index, not the table); pages of one project, model or
-- outcome newest first (seq is the rowid, so an index on one column is ordered by seq within each
-- value: no sort); every project's lapsed reservations found without a scan. No index on time
-- alone: a page since a time walks seq down from the newest and stops at a page's worth.

DROP INDEX IF EXISTS ledger_by_project;
CREATE INDEX ledger_usage ON ledger(
    project_id, created_at, model, outcome, images_returned, cost_micros, input_tokens
);
CREATE INDEX ledger_project_seq ON ledger(project_id);
CREATE INDEX ledger_by_model ON ledger(model);
CREATE INDEX ledger_by_outcome ON ledger(outcome);
CREATE INDEX reservations_expiry ON reservations(expires_at);
