-- Stands in for migration 0005 of a change merged beside this one; replaced by it at the merge.
SELECT 1;
