-- `pushes_purge` only over final states (issue 14). The retention purge is its only reader and
-- asks for one final state at a time. Every state change of a push writes a new tuple into each
-- index whose predicate the new row matches (`state` is indexed, so no change is a HOT
-- update); over all states this index took an entry for `queued`, `sending` and `accepted`
-- too: three of a push's ~16 index insertions that nothing ever read. The purge names the
-- state as a literal so that the generic plan can use this partial index (replicas.rs).
DROP INDEX pushes_purge;
CREATE INDEX pushes_purge ON pushes (state, updated_at)
    WHERE state IN ('delivered', 'failed', 'expired', 'cancelled', 'superseded', 'unconfirmed');
