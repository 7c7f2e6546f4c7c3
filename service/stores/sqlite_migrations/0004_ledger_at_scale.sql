-- The ledger read at scale. Usage is totalled from ledger_usage alone: it holds every column summed,
-- in the order of the totals (project, model, UTC day: the day expression is exactly the one the
-- usage statement groups by, see sql.py), so SQLite reads it in one pass with no sort (a GROUP BY
-- through a temporary b-tree sorts every row: ~10 s for a million). Pages of one project, model or
-- outcome come newest first from an index on that column (seq is the rowid, so each value's
-- entries are in seq order: no sort). Every project's lapsed reservations are found without a
-- scan. No index on time alone: a page since a time walks seq down from the newest entry and stops
-- at a page's worth.

DROP INDEX IF EXISTS ledger_by_project;
CREATE INDEX ledger_usage ON ledger(
    project_id, model, CAST(created_at / 86400 AS INTEGER), created_at, outcome, images_returned,
    cost_micros, input_tokens
);
CREATE INDEX ledger_project_seq ON ledger(project_id);
CREATE INDEX ledger_by_model ON ledger(model);
CREATE INDEX ledger_by_outcome ON ledger(outcome);
CREATE INDEX reservations_expiry ON reservations(expires_at);
