-- dmpushd schema (SQLite). Times are Unix milliseconds; JSON columns hold serde_json text.

CREATE TABLE devices (
    tenant      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    bindings    TEXT    NOT NULL,           -- JSON array of DeviceBinding
    dm          TEXT,                       -- JSON DmCredentials (secrets; never returned by the API)
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

CREATE TABLE pushes (
    id              TEXT    PRIMARY KEY,    -- UUIDv7: time-ordered
    tenant          TEXT    NOT NULL,
    device_id       TEXT,
    bindings        TEXT    NOT NULL,       -- JSON snapshot of the target's bindings
    binding_choice  TEXT,                   -- NULL = auto
    binding_index   INTEGER NOT NULL DEFAULT 0,
    content_type    TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    not_before      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_binding    TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,
    collapse_key    TEXT,
    callback_url    TEXT
);

-- Claims: due waiting pushes, highest priority first.
CREATE INDEX pushes_due ON pushes (priority DESC, next_attempt_at)
    WHERE state IN ('queued', 'retry_wait');
-- Lease takeover.
CREATE INDEX pushes_lease ON pushes (lease_until) WHERE state = 'sending';
-- TTL sweep.
CREATE INDEX pushes_expiry ON pushes (expires_at) WHERE state IN ('queued', 'retry_wait');
-- Tenant listings (newest first by id) and per-device listings.
CREATE INDEX pushes_tenant ON pushes (tenant, id);
CREATE INDEX pushes_device ON pushes (tenant, device_id, id);
CREATE UNIQUE INDEX pushes_idempotency ON pushes (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX pushes_collapse ON pushes (tenant, collapse_key)
    WHERE collapse_key IS NOT NULL AND state IN ('queued', 'retry_wait');

-- One row per state transition (DESIGN §4).
CREATE TABLE push_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    push_id  TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    state    TEXT    NOT NULL,
    binding  TEXT,
    attempt  INTEGER NOT NULL,
    detail   TEXT    NOT NULL
);
CREATE INDEX push_events_push ON push_events (push_id, seq);

-- Next-hop references (e.g. SMPP message ids, one per SMS segment) awaiting receipts.
-- push_id is NULL while a receipt has overtaken the completion that names it.
CREATE TABLE push_refs (
    binding    TEXT    NOT NULL,
    reference  TEXT    NOT NULL,
    push_id    TEXT,
    status     TEXT    NOT NULL,            -- pending | delivered | failed
    detail     TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (binding, reference)
) WITHOUT ROWID;
CREATE INDEX push_refs_push ON push_refs (push_id);
