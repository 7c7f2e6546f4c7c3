-- Archived projects: their keys stop working, their ledger and spend are kept (`mg projects archive`).
-- NULL while a project is active.

ALTER TABLE projects ADD COLUMN archived_at double precision;
