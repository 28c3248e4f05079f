-- Spend aggregates for the reports (the contract's "Reports" section): one row per wallet, UTC day and kind
-- of ledger row, written in the same commit as the ledger rows themselves, so a year's report reads at most
-- 366 × 5 small rows per wallet and never scans the ledger.
--
-- Why a trigger: every path that writes ledger rows (the group committer's one statement, its savepoint
-- path, transfers, atomic bulk batches, captures, the opening credit) inserts into `transactions`; one
-- statement-level trigger over the inserted rows (a transition table) keeps the aggregates in that same
-- transaction whatever the path, so they can never lag or miss a row. A background job with a watermark
-- would have to know when no older commit can still land; commits do land out of `created_at` order.
--
-- Contention: a wallet's aggregate rows are written only by transactions that hold its wallet row lock (every
-- path locks the wallet first), so they add no lock waits of their own.
--
-- Kinds: DEBIT, CREDIT, TRANSFER_IN, TRANSFER_OUT as the ledger's `type`, and REFUND: a CREDIT that carries
-- the reference of a DEBIT of the same wallet (the contract's refund rule) whose reference key dates from no
-- later than the credit. The date condition makes the kind a function of committed data that never changes
-- afterwards (a debit that later takes the same reference does not turn an earlier credit into a refund), so
-- `wallet-service audit reports` recomputes exactly what the trigger wrote.

CREATE FUNCTION spend_kind(wallet UUID, txn_type TEXT, ref_type TEXT, ref_id TEXT, at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN txn_type = 'CREDIT' AND ref_id IS NOT NULL AND ref_type IS NOT NULL AND EXISTS (
            SELECT 1 FROM transaction_references r
             WHERE r.wallet_id = wallet AND r.reference_type = ref_type AND r.reference_id = ref_id
               AND r.type = 'DEBIT' AND wallet_uuid_v7_time(r.txn_id) <= at)
        THEN 'REFUND'
        ELSE txn_type
    END
$$;

CREATE TABLE spend_daily (
    wallet_id  UUID NOT NULL REFERENCES wallets(wallet_id),
    day        DATE NOT NULL,
    kind       VARCHAR(12) NOT NULL,
    -- Wider than a ledger amount: a day's sum of many of them.
    amount     NUMERIC(20,2) NOT NULL,
    count      BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, day, kind),
    CONSTRAINT spend_kind_known CHECK (kind IN ('DEBIT', 'CREDIT', 'REFUND', 'TRANSFER_IN', 'TRANSFER_OUT')),
    CONSTRAINT spend_amount_non_negative CHECK (amount >= 0),
    CONSTRAINT spend_count_positive CHECK (count > 0)
) WITH (fillfactor = 70);  -- room on each page so the day's running totals update in place (HOT)

-- A company's report reads a range of days across its wallets. Only keys are indexed (no amounts), so the
-- running totals' updates stay HOT; a new entry is written once per wallet, day and kind.
CREATE INDEX spend_daily_day ON spend_daily (day);

CREATE FUNCTION spend_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spend_daily AS s (wallet_id, day, kind, amount, count)
    SELECT n.wallet_id, (n.created_at AT TIME ZONE 'UTC')::date,
           spend_kind(n.wallet_id, n.type, n.reference_type, n.reference_id, n.created_at),
           sum(n.amount), count(*)
      FROM new_rows n
     WHERE n.status = 'COMPLETED'
     GROUP BY 1, 2, 3
     -- Sorted like the primary key: two statements never take the same aggregate rows in another order.
     ORDER BY 1, 2, 3
    ON CONFLICT (wallet_id, day, kind) DO UPDATE
       SET amount = s.amount + EXCLUDED.amount, count = s.count + EXCLUDED.count;
    RETURN NULL;
END $$;

-- The trigger first, then the back-fill: creating the trigger locks `transactions` against inserts until this
-- migration commits, so every row is counted once, by the back-fill or by the trigger.
CREATE TRIGGER transactions_spend_daily AFTER INSERT ON transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION spend_daily_add();

INSERT INTO spend_daily (wallet_id, day, kind, amount, count)
SELECT t.wallet_id, (t.created_at AT TIME ZONE 'UTC')::date,
       spend_kind(t.wallet_id, t.type, t.reference_type, t.reference_id, t.created_at),
       sum(t.amount), count(*)
  FROM transactions t
 WHERE t.status = 'COMPLETED'
 GROUP BY 1, 2, 3;
