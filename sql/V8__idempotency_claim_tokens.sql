-- Claim fencing: each claim of an Idempotency-Key writes a fresh token; the effect's commit locks the key's
-- row and writes only while the row still holds its token and no reply. A release (after a failure) or a
-- takeover (after the lease) replaces or removes the token, so a late commit of an abandoned attempt finds
-- nothing to fence on and writes nothing. Rows from before this migration have no token: they can only be
-- replayed (finished) or taken over after their lease (unfinished).
ALTER TABLE idempotency_keys ADD COLUMN claim_token UUID;
