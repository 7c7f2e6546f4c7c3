-- What each project holds reserved, per budget period, kept by triggers as reservations are taken,
-- settled, released or lapse: a reservation then checks its cap by reading one row, where adding up
-- every reservation the project held cost ~0.8 ms with 10,000 generations in flight. `period` is
-- '' for reservations under a lifetime cap, else '<period_anchor>:<period_start>' (a text key: NULL
-- would not take part in the primary key's conflicts).

CREATE TABLE reserved_totals (
    project_id TEXT NOT NULL, period TEXT NOT NULL, reserved_micros INTEGER NOT NULL,
    PRIMARY KEY (project_id, period)
) WITHOUT ROWID;
INSERT INTO reserved_totals
    SELECT project_id, IFNULL(period_anchor || ':' || period_start, ''), SUM(amount_micros)
    FROM reservations GROUP BY 1, 2;
-- (each trigger's inner statement ends mid-line: migration files are split at line-ending semicolons)
CREATE TRIGGER reservation_taken AFTER INSERT ON reservations BEGIN
    INSERT INTO reserved_totals VALUES (
        NEW.project_id, IFNULL(NEW.period_anchor || ':' || NEW.period_start, ''), NEW.amount_micros
    ) ON CONFLICT (project_id, period) DO UPDATE SET reserved_micros = reserved_micros + excluded.reserved_micros; END;
CREATE TRIGGER reservation_ended AFTER DELETE ON reservations BEGIN
    UPDATE reserved_totals SET reserved_micros = reserved_micros - OLD.amount_micros
    WHERE project_id = OLD.project_id AND period = IFNULL(OLD.period_anchor || ':' || OLD.period_start, ''); END;
-- Nothing adds up a period's reservations on the way to the provider any more: reads of spend find
-- them by project (reservations_by_project), and every reservation is one index lighter to write.
DROP INDEX reservations_by_period;
