-- Truthful outcomes (DESIGN §10.1). Mirrors migrations/sqlite/0002_outcomes.sql.
--
-- 1. Next-hop references are keyed per account: an SMSC message id names a message only within
--    one SMSC account (`[[bindings.wap.smsc]] name`), and SMSCs reuse ids. References used to be
--    stored as "<account>:<id>" text; they are split here. `hold_until` is set on orphan receipts
--    (no push holds the id yet): past it they are dropped and never settle a push.
-- 2. `unconfirmed`: accepted pushes without any reference can never receive a receipt; they end
--    `unconfirmed` (with an event), as new ones now do at once.
-- 3. Collapse keys are scoped to tenant + device: the index follows the new predicate.

ALTER TABLE push_refs ADD COLUMN account TEXT NOT NULL DEFAULT '';
ALTER TABLE push_refs ADD COLUMN hold_until BIGINT;
UPDATE push_refs
   SET account = split_part(reference, ':', 1),
       reference = substr(reference, strpos(reference, ':') + 1)
 WHERE strpos(reference, ':') > 0;
-- the default bindings.wap.receipt_hold_seconds (120 s)
UPDATE push_refs SET hold_until = updated_at + 120000 WHERE push_id IS NULL;
ALTER TABLE push_refs ALTER COLUMN account DROP DEFAULT;
ALTER TABLE push_refs DROP CONSTRAINT push_refs_pkey;
ALTER TABLE push_refs ADD PRIMARY KEY (binding, account, reference);
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
