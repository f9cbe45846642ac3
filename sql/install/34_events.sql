-- ---------------------------------------------------------------------------------------------
-- The events outbox, read by workers: each unacknowledged event goes to one worker at a time
-- (FOR UPDATE SKIP LOCKED) for credits.event_lease (default 5 minutes); an event claimed and
-- not acknowledged in that time is handed out again, so a worker that dies loses nothing.
-- ---------------------------------------------------------------------------------------------

-- Hands up to max_events unacknowledged, unleased events to the caller, oldest first.
CREATE FUNCTION credits.claim_events(max_events integer DEFAULT 100) RETURNS SETOF credits.events
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    claim_time timestamptz := credits.now();
BEGIN
    PERFORM credits._require('max_events', max_events IS NULL);
    IF max_events NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, got %', max_events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH claimable AS (
        SELECT e.event_id FROM credits.events e
         WHERE e.acked_at IS NULL AND (e.claimed_until IS NULL OR e.claimed_until <= claim_time)
         ORDER BY e.event_id
         LIMIT max_events
         FOR UPDATE SKIP LOCKED)
    UPDATE credits.events e
       SET claimed_until = claim_time + credits.event_lease(), claims = e.claims + 1
      FROM claimable c
     WHERE e.event_id = c.event_id
    RETURNING e.*;
END $$;

-- Marks a claimed event as done.  Acknowledging it again does nothing.
CREATE FUNCTION credits.ack_event(event_id bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    e credits.events;
BEGIN
    PERFORM credits._require('event_id', event_id IS NULL);
    SELECT * INTO e FROM credits.events x WHERE x.event_id = ack_event.event_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event %', event_id USING ERRCODE = 'no_data_found';
    ELSIF e.claims = 0 THEN
        RAISE EXCEPTION 'event % was never claimed', event_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Claim events with credits.claim_events() before acknowledging them.';
    ELSIF e.acked_at IS NULL THEN
        UPDATE credits.events x SET acked_at = credits.now() WHERE x.event_id = ack_event.event_id;
    END IF;
END $$;
