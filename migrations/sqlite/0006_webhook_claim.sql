-- Webhook claim over a bounded window (mirrors migrations/postgres/0007_webhook_claim.sql, part 2):
-- a later event of a push is not due before an earlier pending one of the same push is, so that
-- due-but-blocked rows do not fill the claim's window (src/store/sqlite/outbox.rs).
DROP TRIGGER push_events_webhook;

CREATE TRIGGER push_events_webhook AFTER INSERT ON push_events
WHEN NEW.kind = 'state' AND NEW.state IN
    ('accepted', 'delivered', 'failed', 'expired', 'cancelled', 'superseded', 'unconfirmed')
BEGIN
    INSERT INTO webhook_outbox (id, push_id, tenant, state, seq, target, created_at, age_from,
                                next_attempt_at)
    SELECT 'msg_' || NEW.push_id || '_' || NEW.seq, NEW.push_id, p.tenant, NEW.state, NEW.seq,
           p.callback_url, NEW.at, NEW.at,
           max(NEW.at, COALESCE((SELECT max(e.next_attempt_at) FROM webhook_outbox e
                                  WHERE e.push_id = NEW.push_id AND e.status = 'pending'),
                                NEW.at))
      FROM pushes p WHERE p.id = NEW.push_id AND p.callback_url IS NOT NULL;
END;
