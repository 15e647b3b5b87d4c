-- Outbox rows per statement, not per row (issue 11 acceptance 7, docs/perf/webhooks.md).
--
-- The row trigger of 0005/0007 ran its PL/pgSQL function once per event: a completion batch of
-- 100 delivered pushes made 100 function calls, 100 lookups of the push and 100 single-row
-- inserts, which lengthened the completion transaction by 40 % (13.97 -> 19.80 ms per batch in
-- the e2e benchmark). A statement-level trigger sees the statement's new rows as a transition
-- table and writes their outbox rows with one INSERT ... SELECT. What it writes is the same, and
-- still in the transaction of the state change, for whatever code path inserts the events.
--
-- Two events of one push in one statement: each row's `next_attempt_at` is not before the push's
-- pending events (0007). The earlier event of the same statement is not visible to the subquery,
-- but it starts at its own time, which is not after the later one's, so GREATEST(n.at, ...) gives
-- the same value the row trigger gave.
CREATE FUNCTION dmpushd_webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (id, push_id, tenant, state, seq, target, created_at, age_from,
                                next_attempt_at)
    SELECT 'msg_' || n.push_id || '_' || n.seq, n.push_id, p.tenant, n.state, n.seq,
           p.callback_url, n.at, n.at,
           GREATEST(n.at, COALESCE((SELECT max(e.next_attempt_at) FROM webhook_outbox e
                                     WHERE e.push_id = n.push_id
                                       AND e.status NOT IN ('done', 'given_up')), n.at))
      FROM new_events n JOIN pushes p ON p.id = n.push_id
     WHERE n.kind = 'state'
       AND n.state IN ('accepted', 'delivered', 'failed', 'expired', 'cancelled', 'superseded',
                       'unconfirmed')
       AND p.callback_url IS NOT NULL
     ORDER BY n.push_id COLLATE "C", n.seq;
    RETURN NULL;
END
$$;

DROP TRIGGER push_events_webhook ON push_events;
DROP FUNCTION dmpushd_webhook_event();

CREATE TRIGGER push_events_webhook AFTER INSERT ON push_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION dmpushd_webhook_events();
