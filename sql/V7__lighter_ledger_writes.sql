-- Less written per posting, nothing lost (issue 6: the profile of a spread debit put audit_log, the outbox
-- payload and the transaction row's checks at about a third of Postgres' time).

-- 1. An applied credit or debit is recorded once: its ledger row says who asked (actor_id, actor_role), and
--    the ledger is append-only like audit_log. audit_log keeps everything that has no ledger row of its own
--    (refusals, status changes, transfers, budgets, users); the view audit_trail shows both as one trail.
--    Rows written before this migration have their audit_log row and no actor here.
ALTER TABLE transactions ADD COLUMN actor_id UUID, ADD COLUMN actor_role VARCHAR(20);

CREATE FUNCTION transactions_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transactions are append-only';
END $$;
-- Row triggers on a partitioned table are cloned to every partition, present and future.
CREATE TRIGGER transactions_no_update BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION transactions_are_append_only();
CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION transactions_are_append_only();

CREATE VIEW audit_trail AS
    SELECT at, actor_id, actor_role, action, target_type, target_id, outcome, detail
      FROM audit_log
    UNION ALL
    SELECT created_at, actor_id, actor_role,
           CASE type WHEN 'DEBIT' THEN 'wallet.debit' ELSE 'wallet.credit' END,
           'wallet', wallet_id::text, 'APPLIED',
           jsonb_build_object('txn_id', txn_id, 'amount', amount::text, 'type', type, 'reference_id', reference_id)
      FROM transactions
     WHERE type IN ('CREDIT', 'DEBIT') AND actor_role IS NOT NULL;

-- 2. The CHECK that ties created_at to the txn id ran a SQL function that Postgres could not inline (its
--    `timestamptz + interval` is only STABLE), ~2.7 µs per row. The same arithmetic in `timestamp` and then
--    `AT TIME ZONE 'UTC'` is IMMUTABLE throughout, so it is inlined (~0.3 µs). The result is identical for
--    every id (same millisecond count, same epoch), so rows already checked stay valid.
CREATE OR REPLACE FUNCTION wallet_uuid_v7_time(id UUID) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (TIMESTAMP 'epoch'
            + (('x' || encode(substring(uuid_send(id) FROM 1 FOR 6), 'hex'))::bit(48)::bigint)
              * INTERVAL '1 millisecond') AT TIME ZONE 'UTC'
$$;

-- 3. Most postings carry no reference: index only those that do (a look-up by reference_id implies it is
--    not null, so the design's queries still use the index). References are unique in
--    transaction_references; this index only serves look-ups.
DROP INDEX idx_transactions_reference;
CREATE INDEX idx_transactions_reference ON transactions(reference_id, reference_type) WHERE reference_id IS NOT NULL;

-- 4. The outbox payload is written once and read once, as text: `json` keeps it validated and queryable
--    (->, ->>) without jsonb's conversion on the way in and out, and publishes exactly the bytes written.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
