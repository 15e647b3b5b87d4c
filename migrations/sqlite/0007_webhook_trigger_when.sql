-- The outbox trigger (0004, 0006) runs its body only for pushes that have a webhook target.
-- Its body's INSERT … SELECT reads webhook_outbox (the per-push order's max(next_attempt_at)), so
-- SQLite materialises the SELECT in a temporary table every time it runs, even when the push has
-- no callback_url and the SELECT yields nothing: ≈ 20 µs per `accepted`/`delivered` event on the
-- single writer for every push (docs/perf/webhooks.md, third pass). The WHEN clause's lookup of
-- the push by its primary key is all that remains for pushes without webhooks.
DROP TRIGGER push_events_webhook;

CREATE TRIGGER push_events_webhook AFTER INSERT ON push_events
WHEN NEW.kind = 'state' AND NEW.state IN
    ('accepted', 'delivered', 'failed', 'expired', 'cancelled', 'superseded', 'unconfirmed')
    AND (SELECT p.callback_url FROM pushes p WHERE p.id = NEW.push_id) IS NOT NULL
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
