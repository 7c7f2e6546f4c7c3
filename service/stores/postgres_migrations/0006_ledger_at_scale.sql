-- The ledger read at scale (needs PostgreSQL 14 or later: statistics on an expression).
-- Usage is totalled from ledger_usage alone (an index-only scan on a vacuumed table): it holds every
-- column summed, keyed by project, model and UTC day (the expression the usage statement groups by),
-- and the statistics on those three tell the planner how few groups there are (without them it
-- expects one per row and sorts the whole ledger on disk rather than hashing: ~5 s for a million).
-- A project's pages come newest first from ledger_project_seq, without a sort; ledger_by_project
-- (project, time) is no longer what any statement reads best, and every index costs each write.

CREATE INDEX ledger_usage ON ledger (project_id, model, (floor(created_at / 86400)::bigint))
    INCLUDE (created_at, outcome, images_returned, cost_micros, input_tokens);
CREATE STATISTICS ledger_usage_groups (ndistinct)
    ON project_id, model, (floor(created_at / 86400)::bigint) FROM ledger;
CREATE INDEX ledger_project_seq ON ledger (project_id, seq);
DROP INDEX ledger_by_project;
