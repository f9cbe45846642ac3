\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/ledger_helpers.sql
\set ECHO all
--
-- The events outbox (README "Events for the outside world"): events written with the change
-- that caused them, NOTIFY credits_events at commit, claim_events / ack_event with a lease.
-- Projects 4200-4299.
--
-- claim_events hands out every project's events, so first acknowledge what earlier test files
-- left unacknowledged: claimed at a clock far ahead, every earlier lease has run out.
SET credits.clock = '2100-01-01 00:00+00';
DO $$
BEGIN
    LOOP
        PERFORM credits.ack_event(e.event_id) FROM credits.claim_events(10000) AS e;
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;
SELECT count(*) AS unacknowledged FROM credits.events WHERE acked_at IS NULL;

SET credits.clock = '2026-03-03 12:00+00';
SELECT credits.open_account(4201);
SELECT pg_temp.keep('method', 'VISA', credits.add_payment_method(4201, 'pm_visa_4201', 'Visa')) AS visa \gset

--
-- NOTIFY credits_events: sent when the transaction that queued an event commits, once per
-- transaction, and not at all when it rolls back.  psql prints each notification it receives
-- after the statement; they are written to a file here and printed with the server process
-- id (which changes from run to run) masked.
--
LISTEN credits_events;
\o results/ledger_events.notifications
\qecho -- one deposit requested:
SELECT pg_temp.keep('transaction', 'T1', credits.add_credits(4201, '10.00')) AS t1 \gset
\qecho -- two deposits requested in one transaction:
BEGIN;
SELECT pg_temp.keep('transaction', 'T2', credits.add_credits(4201, '20.00')) AS t2 \gset
SELECT pg_temp.keep('transaction', 'T3', credits.add_credits(4201, '30.00')) AS t3 \gset
\qecho -- (commit)
COMMIT;
\qecho -- a deposit requested in a transaction that rolls back:
BEGIN;
SELECT credits.add_credits(4201, '99.00') > 0 AS requested \gset
ROLLBACK;
\qecho -- no event queued:
SELECT credits.open_account(4202) \gset
SELECT credits.complete_deposit(4201, :t1) \gset
\qecho -- end
\o
\set notifications `sed -E 's/PID [0-9]+/PID (pid)/' results/ledger_events.notifications`
\echo :notifications
UNLISTEN credits_events;
-- the events are in the outbox, in the order they were written; the rolled back one is not
SELECT pg_temp.keep('event', 'E1', event_id) AS e1 FROM credits.events WHERE transaction_id = :t1 \gset
SELECT pg_temp.keep('event', 'E2', event_id) AS e2 FROM credits.events WHERE transaction_id = :t2 \gset
SELECT pg_temp.keep('event', 'E3', event_id) AS e3 FROM credits.events WHERE transaction_id = :t3 \gset
SELECT pg_temp.n('event', event_id) AS event, kind, pg_temp.n('transaction', transaction_id) AS transaction,
       payload->>'amount' AS amount, created_at, claimed_until, claims, acked_at
  FROM credits.events WHERE project_id IN (4201, 4202) ORDER BY event_id;

--
-- claim_events hands out unacknowledged, unleased events, oldest first, for
-- credits.event_lease (5 minutes by default).
--
SHOW credits.event_lease;
SELECT pg_temp.n('event', event_id) AS event, kind, pg_temp.n('transaction', transaction_id) AS transaction,
       payload->>'amount' AS amount, claimed_until, claims, acked_at
  FROM credits.claim_events(2) ORDER BY event_id;
-- the next worker gets the rest, then nothing: leased events are not handed out twice
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;

-- ack_event marks a claimed event done; acknowledging it again changes nothing.
SET credits.clock = '2026-03-03 12:01+00';
SELECT credits.ack_event(:e1);
SET credits.clock = '2026-03-03 12:02+00';
SELECT credits.ack_event(:e1);
SELECT pg_temp.n('event', event_id) AS event, claims, acked_at FROM credits.events WHERE event_id = :e1;

-- An event that was never claimed cannot be acknowledged; bad arguments are refused.
SELECT pg_temp.keep('transaction', 'T4', credits.add_credits(4201, '40.00')) AS t4 \gset
SELECT pg_temp.keep('event', 'E4', event_id) AS e4 FROM credits.events WHERE transaction_id = :t4 \gset
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.refused(format('SELECT credits.ack_event(%s)', :e4));
SELECT pg_temp.refused('SELECT credits.ack_event(-1)');
SELECT pg_temp.refused('SELECT credits.ack_event(NULL)');
SELECT pg_temp.refused('SELECT * FROM credits.claim_events(0)');
SELECT pg_temp.refused('SELECT * FROM credits.claim_events(-5)');
SELECT pg_temp.refused('SELECT * FROM credits.claim_events(10001)');
SELECT pg_temp.refused('SELECT * FROM credits.claim_events(NULL)');
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims, acked_at FROM credits.events WHERE event_id = :e4;
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events(10000) ORDER BY event_id;
SELECT credits.ack_event(:e3);

--
-- A lease that runs out: the event is handed out again (a worker that died loses nothing).
-- E1 and E3 are acknowledged; E2 was claimed at 12:00, E4 at 12:02.
--
SET credits.clock = '2026-03-03 12:04:59.999999+00';
SELECT pg_temp.n('event', event_id) AS event FROM credits.claim_events() ORDER BY event_id;
SET credits.clock = '2026-03-03 12:05+00';
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;
-- A superuser can change the lease.
SET credits.clock = '2026-03-03 12:07+00';
SET credits.event_lease = '90s';
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;
SET credits.clock = '2026-03-03 12:08:29.999999+00';
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;
SET credits.clock = '2026-03-03 12:08:30+00';
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims FROM credits.claim_events() ORDER BY event_id;
RESET credits.event_lease;
SHOW credits.event_lease;
SET credits.clock = '2026-03-03 12:09+00';
SELECT credits.ack_event(:e2);
SELECT credits.ack_event(:e4);
SELECT pg_temp.n('event', event_id) AS event, claimed_until, claims, acked_at
  FROM credits.events WHERE project_id = 4201 ORDER BY event_id;
SET credits.clock = '2026-03-03 13:00+00';
SELECT pg_temp.n('event', event_id) AS event FROM credits.claim_events() ORDER BY event_id;
SELECT count(*) AS unacknowledged FROM credits.events WHERE acked_at IS NULL;

-- Every invariant holds.
SELECT credits.fail_deposit(4201, :t2), credits.fail_deposit(4201, :t3), credits.fail_deposit(4201, :t4);
SELECT * FROM credits.verify();
