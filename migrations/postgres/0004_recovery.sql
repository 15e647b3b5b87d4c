-- Prompt recovery and retention (DESIGN §10.1).

-- One row per live replica: its lease owner id and its last heartbeat (Unix ms, the replica's
-- clock, as lease times are). A replica whose heartbeat is older than the dead-after bound
-- (src/queue/dispatcher.rs) is deleted by a sweep of another replica, and its leases are made
-- claimable at once instead of after `queue.lease_seconds`. A cleanly stopped replica deletes
-- its own row.
CREATE TABLE replicas (
    id           TEXT COLLATE "C" PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- The dead-replica sweep frees the leases of one owner.
CREATE INDEX pushes_lease_owner ON pushes (lease_owner) WHERE state = 'sending';

-- Retention: the purge finds final pushes by state and last change.
CREATE INDEX pushes_purge ON pushes (state, updated_at);
