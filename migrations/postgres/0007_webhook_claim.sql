-- Webhook claim over a bounded window (docs/perf/webhooks.md "PostgreSQL claim plan").
--
-- 1. Statistics follow growth. The outbox can grow from empty to 100,000 pending rows in seconds;
--    with the default scale factors autovacuum analyses it long after, and until then the planner
--    believes `status = 'pending'` matches a handful of rows. The claim (src/store/postgres/
--    outbox.rs) no longer depends on those estimates, but other readers (the depth gauge, the
--    retry API) still plan with them, and dead rows from the lease churn are vacuumed sooner.
ALTER TABLE webhook_outbox SET (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_threshold = 500
);

-- 2. A later event of a push is not due before an earlier pending one of the same push is: per-push
--    order makes it wait anyway, and as a due-but-blocked row it would take a place in the claim's
--    bounded window (enough of them, behind one failing receiver, would fill the window and stall
--    every other target). The sender moves the waiting events along when it records a retry
--    (record_in); here a new event starts no earlier than the push's pending ones.
CREATE OR REPLACE FUNCTION dmpushd_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (id, push_id, tenant, state, seq, target, created_at, age_from,
                                next_attempt_at)
    SELECT 'msg_' || NEW.push_id || '_' || NEW.seq, NEW.push_id, p.tenant, NEW.state, NEW.seq,
           p.callback_url, NEW.at, NEW.at,
           GREATEST(NEW.at, COALESCE((SELECT max(e.next_attempt_at) FROM webhook_outbox e
                                       WHERE e.push_id = NEW.push_id
                                         AND e.status NOT IN ('done', 'given_up')), NEW.at))
      FROM pushes p WHERE p.id = NEW.push_id AND p.callback_url IS NOT NULL;
    RETURN NULL;
END
$$;
