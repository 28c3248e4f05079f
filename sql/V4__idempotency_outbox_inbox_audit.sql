-- Exactly-once bookkeeping and the audit trail.

-- Idempotency-Key records, scoped to (caller, endpoint). A row without a response is "in progress":
-- claimed by a request that has not finished. `locked_until` lets a claim abandoned by a crashed process
-- be taken over; the effect's own transaction writes the response, so an effect that committed always
-- has its response recorded.
CREATE TABLE idempotency_keys (
    caller          UUID NOT NULL,
    endpoint        VARCHAR(100) NOT NULL,
    key             VARCHAR(255) NOT NULL,
    request_hash    BYTEA NOT NULL,
    response_status SMALLINT,
    response_body   TEXT,
    locked_until    TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (caller, endpoint, key)
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys(created_at);

-- Transactional outbox: written in the same transaction as the change it reports; the relay publishes
-- rows in `seq` order and marks them published after the broker's confirm.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    event_id      UUID NOT NULL UNIQUE,
    event_type    VARCHAR(50) NOT NULL,
    routing_key   VARCHAR(100) NOT NULL,
    aggregate_id  UUID,
    payload       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    published_at  TIMESTAMPTZ
);
CREATE INDEX idx_outbox_unpublished ON outbox(seq) WHERE published_at IS NULL;

-- Inbox: ids of consumed events whose effect is committed (written in the effect's transaction).
CREATE TABLE processed_events (
    event_id      UUID PRIMARY KEY,
    event_type    VARCHAR(50) NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Append-only audit trail: who did what to which resource, and how it ended (refusals included).
CREATE TABLE audit_log (
    audit_id     BIGSERIAL PRIMARY KEY,
    actor_id     UUID,
    actor_role   VARCHAR(20) NOT NULL,
    action       VARCHAR(50) NOT NULL,
    target_type  VARCHAR(30) NOT NULL,
    target_id    TEXT NOT NULL,
    outcome      VARCHAR(40) NOT NULL,
    detail       JSONB,
    at           TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_audit_log_target ON audit_log(target_type, target_id, at DESC);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
