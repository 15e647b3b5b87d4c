-- Truthful outcomes (DESIGN §10.1).
--
-- 1. Next-hop references are keyed per account: an SMSC message id names a message only within
--    one SMSC account (`[[bindings.wap.smsc]] name`), and SMSCs reuse ids. References used to be
--    stored as "<account>:<id>" text; they are split here. `hold_until` is set on orphan receipts
--    (no push holds the id yet): past it they are dropped and never settle a push.
-- 2. `unconfirmed`: accepted pushes without any reference can never receive a receipt; they end
--    `unconfirmed` (with an event), as new ones now do at once.
-- 3. Collapse keys are scoped to tenant + device: the index follows the new predicate.

CREATE TABLE push_refs_v2 (
    binding    TEXT    NOT NULL,
    account    TEXT    NOT NULL,            -- e.g. the SMSC name; '' where the binding has none
    reference  TEXT    NOT NULL,            -- the id within the account
    push_id    TEXT,                        -- NULL: an orphan receipt (overtook its submit_sm_resp)
    status     TEXT    NOT NULL,            -- pending | delivered | failed
    detail     TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    hold_until INTEGER,                     -- orphans only: kept until then
    PRIMARY KEY (binding, account, reference)
) WITHOUT ROWID;

INSERT INTO push_refs_v2 (binding, account, reference, push_id, status, detail, updated_at, hold_until)
SELECT binding,
       CASE WHEN instr(reference, ':') > 0 THEN substr(reference, 1, instr(reference, ':') - 1) ELSE '' END,
       CASE WHEN instr(reference, ':') > 0 THEN substr(reference, instr(reference, ':') + 1) ELSE reference END,
       push_id, status, detail, updated_at,
       -- the default bindings.wap.receipt_hold_seconds (120 s)
       CASE WHEN push_id IS NULL THEN updated_at + 120000 END
  FROM push_refs;

DROP TABLE push_refs;
ALTER TABLE push_refs_v2 RENAME TO push_refs;
CREATE INDEX push_refs_push ON push_refs (push_id);
-- Orphan purge (housekeeper).
CREATE INDEX push_refs_orphan ON push_refs (hold_until) WHERE push_id IS NULL;

-- Receipt window sweep: accepted pushes by TTL.
CREATE INDEX pushes_receipt_wait ON pushes (expires_at) WHERE state = 'accepted';

DROP INDEX pushes_collapse;
CREATE INDEX pushes_collapse ON pushes (tenant, collapse_key, device_id)
    WHERE collapse_key IS NOT NULL AND state IN ('queued', 'retry_wait');

INSERT INTO push_events (push_id, at, state, binding, attempt, detail)
SELECT id, updated_at, 'unconfirmed', last_binding, attempts, 'no receipt can come (no next-hop reference)'
  FROM pushes
 WHERE state = 'accepted'
   AND NOT EXISTS (SELECT 1 FROM push_refs r WHERE r.push_id = pushes.id);
UPDATE pushes SET state = 'unconfirmed'
 WHERE state = 'accepted'
   AND NOT EXISTS (SELECT 1 FROM push_refs r WHERE r.push_id = pushes.id);
