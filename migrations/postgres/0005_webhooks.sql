-- Webhooks (issue 11, DESIGN §10.2): the transactional outbox. Mirrors
-- migrations/sqlite/0004_webhooks.sql; see src/store/outbox.rs and docs/decisions/webhooks.md.

-- `state` rows are state changes; `webhook` rows are webhook attempts on the push timeline (they
-- never cause a webhook themselves).
ALTER TABLE push_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';

CREATE TABLE webhook_outbox (
    id              TEXT COLLATE "C" PRIMARY KEY,   -- the webhook-id: msg_<push id>_<event seq>
    push_id         TEXT COLLATE "C" NOT NULL,
    tenant          TEXT COLLATE "C" NOT NULL,
    state           TEXT    NOT NULL,       -- type = push.<state>
    seq             BIGINT  NOT NULL,       -- the push_events row: payload "as of" it; per-push order
    target          TEXT    NOT NULL,       -- resolved at submit (pushes.callback_url)
    created_at      BIGINT  NOT NULL,       -- the state change's time
    age_from        BIGINT  NOT NULL,       -- given up max_age after this (re-queue resets it)
    next_attempt_at BIGINT  NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    status          TEXT    NOT NULL DEFAULT 'pending',   -- pending | done | given_up
    last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_push ON webhook_outbox (push_id, seq);

-- Written in the transaction of the state change that causes it: whatever code path records an
-- `accepted` or final event for a push with a webhook target. The state list is
-- src/store/outbox.rs WEBHOOK_STATES.
CREATE FUNCTION dmpushd_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (id, push_id, tenant, state, seq, target, created_at, age_from,
                                next_attempt_at)
    SELECT 'msg_' || NEW.push_id || '_' || NEW.seq, NEW.push_id, p.tenant, NEW.state, NEW.seq,
           p.callback_url, NEW.at, NEW.at, NEW.at
      FROM pushes p WHERE p.id = NEW.push_id AND p.callback_url IS NOT NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER push_events_webhook AFTER INSERT ON push_events FOR EACH ROW
    WHEN (NEW.kind = 'state' AND NEW.state IN
          ('accepted', 'delivered', 'failed', 'expired', 'cancelled', 'superseded', 'unconfirmed'))
    EXECUTE FUNCTION dmpushd_webhook_event();
