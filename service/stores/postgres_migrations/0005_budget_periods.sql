-- Budget periods: a project's cap may renew every day, week, month (calendar periods in UTC) or
-- rolling N days from the moment the period was set (its anchor). What each period spent and holds
-- is a row of its own; `spend` keeps the lifetime total (every charge) and the lifetime cap's
-- reservations. A reservation records the period it was taken in, and is settled into it.

ALTER TABLE projects
    ADD COLUMN budget_period text NOT NULL DEFAULT '',
    ADD COLUMN budget_anchor bigint NOT NULL DEFAULT 0,
    ADD COLUMN budget_carry_micros bigint NOT NULL DEFAULT 0;

ALTER TABLE reservations
    ADD COLUMN period_anchor bigint,
    ADD COLUMN period_start bigint;

CREATE TABLE period_spend (
    project_id text NOT NULL,
    anchor bigint NOT NULL,
    start bigint NOT NULL,
    spent_micros bigint NOT NULL,
    reserved_micros bigint NOT NULL,
    PRIMARY KEY (project_id, anchor, start)
);

-- The start (seconds since the epoch) of the period holding `at`: service/stores/periods.py's
-- arithmetic, here so that a statement derives the period from the database's clock as it checks it.
CREATE FUNCTION mg_period_start(kind text, days integer, anchor bigint, at double precision)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind
        WHEN 'rolling' THEN
            anchor + (floor((floor(at) - anchor) / (days * 86400)::float8))::bigint * days * 86400
        WHEN 'day' THEN (floor(at / 86400))::bigint * 86400
        WHEN 'week' THEN
            extract(epoch FROM date_trunc('week', to_timestamp(floor(at)) AT TIME ZONE 'UTC'))::bigint
        ELSE extract(epoch FROM date_trunc('month', to_timestamp(floor(at)) AT TIME ZONE 'UTC'))::bigint
    END
$$;
