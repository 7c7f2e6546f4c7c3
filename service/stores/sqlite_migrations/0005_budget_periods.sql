-- Budget periods (stores/periods.py): a project's cap may renew every day, week, month or rolling N
-- days. The project keeps its period, when it was set (the anchor) and what the period in force
-- before had spent (counted in the first period of the new one); each reservation the period it
-- was taken in (NULL under a lifetime cap); period_spend what each period spent. The lifetime total
-- stays in `spend`, which every charge joins whatever the period.

ALTER TABLE projects ADD COLUMN budget_period TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN budget_anchor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN budget_carry_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN period_anchor INTEGER;
ALTER TABLE reservations ADD COLUMN period_start INTEGER;
CREATE TABLE period_spend (
    project_id TEXT NOT NULL, anchor INTEGER NOT NULL, start INTEGER NOT NULL, spent_micros INTEGER NOT NULL,
    PRIMARY KEY (project_id, anchor, start)
);
CREATE INDEX reservations_by_period ON reservations(project_id, period_anchor, period_start);
