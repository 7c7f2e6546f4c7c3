-- Archived projects: their keys stop working, their ledger and spend are kept. NULL while active.

ALTER TABLE projects ADD COLUMN archived_at REAL;
