-- Retention (DESIGN §10.1): the purge finds final pushes by state and last change, one range
-- scan per final state, instead of walking the whole table every purge interval.
CREATE INDEX pushes_purge ON pushes (state, updated_at);
