-- The ledger read at scale: usage totalled in the database from an index that holds every column it
-- sums (an index-only scan on a vacuumed table; it replaces ledger_by_project, its prefix), and a
-- project's pages newest first without a sort.

CREATE INDEX ledger_usage ON ledger (project_id, created_at)
    INCLUDE (model, outcome, images_returned, cost_micros, input_tokens);
DROP INDEX ledger_by_project;
CREATE INDEX ledger_project_seq ON ledger (project_id, seq);
