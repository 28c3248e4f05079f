-- The inbox is pruned after its retention (see db::prune_inbox); this index keeps that cheap.
CREATE INDEX idx_processed_events_processed_at ON processed_events(processed_at);
