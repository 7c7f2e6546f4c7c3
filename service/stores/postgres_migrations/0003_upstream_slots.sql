-- A provider's max_in_flight: slot 0..limit-1 of its pool, each held by one upstream call until
-- released or until its lease lapses (a dead worker's).
CREATE TABLE upstream_slots (
    pool text NOT NULL,
    slot integer NOT NULL,
    holder text NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (pool, slot)
);
