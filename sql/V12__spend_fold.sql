-- Spend aggregates folded off the commit path (issue 14's measured target: the aggregates may cost debits
-- no more than 5%; V11's trigger cost 11–14%, all of it inside every group commit, under the wallet locks).
--
-- What replaces the trigger:
-- * Every ledger row records the top-level transaction id that wrote it (`xact`, from
--   `pg_current_xact_id()`): a 64-bit id that never wraps.
-- * `spend_fold_run()` folds the rows whose `xact` lies in [horizon, new horizon) into `spend_daily` and
--   `spend_monthly`, and moves the horizon, in one transaction. The new horizon is the `xmin` of the folding
--   statement's own snapshot: every transaction with a smaller id had finished when that snapshot was taken,
--   so the statement sees exactly the committed rows below it, and no row below it can appear later. Commits
--   that land out of `created_at` (or id) order are therefore never missed nor counted twice: a row is folded
--   by the one run whose [horizon, new horizon) holds its `xact`, once its transaction has finished.
-- * A report reads, in one snapshot, the aggregates, the horizon and the ledger rows at or above it (the
--   "tail", found through a BRIN index on `xact`: only the newest pages), so it is exact to the last commit
--   whether or not the fold has run.
-- * Rows written before this migration have `xact` NULL: V11's trigger counted them (the trigger is dropped
--   in this transaction, under the table lock ALTER TABLE takes, so no row is written in between).
--
-- `spend_monthly` is the same figures by calendar month: a month's report by user reads one row per wallet
-- and kind instead of one per wallet, day and kind.

DROP TRIGGER transactions_spend_daily ON transactions;
DROP FUNCTION spend_daily_add();

-- Added without a default, then given one: a volatile default at ADD COLUMN would rewrite the table and stamp
-- every old row with this migration's id.
ALTER TABLE transactions ADD COLUMN xact BIGINT;
ALTER TABLE transactions ALTER COLUMN xact SET DEFAULT (pg_current_xact_id()::text)::bigint;
-- BRIN: a few bytes per 128 pages, nearly free on insert; ledger rows arrive in about `xact` order, so the
-- tail is the last page ranges (unsummarized ranges are always read, which is the newest ones).
CREATE INDEX transactions_xact ON transactions USING brin (xact) WITH (autosummarize = on);

CREATE TABLE spend_monthly (
    wallet_id  UUID NOT NULL REFERENCES wallets(wallet_id),
    month      DATE NOT NULL,
    kind       VARCHAR(12) NOT NULL,
    amount     NUMERIC(20,2) NOT NULL,
    count      BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, month, kind),
    CONSTRAINT spend_month_first_day CHECK (extract(day FROM month) = 1),
    CONSTRAINT spend_monthly_kind_known CHECK (kind IN ('DEBIT', 'CREDIT', 'REFUND', 'TRANSFER_IN', 'TRANSFER_OUT')),
    CONSTRAINT spend_monthly_amount_non_negative CHECK (amount >= 0),
    CONSTRAINT spend_monthly_count_positive CHECK (count > 0)
) WITH (fillfactor = 70);

CREATE INDEX spend_monthly_month ON spend_monthly (month);

INSERT INTO spend_monthly (wallet_id, month, kind, amount, count)
SELECT wallet_id, date_trunc('month', day)::date, kind, sum(amount), sum(count)
  FROM spend_daily GROUP BY 1, 2, 3;

-- One row: the fold's horizon. Every non-NULL `xact` below it is in the aggregates; none at or above it is.
-- 0 at first: the first run folds every row written after this migration.
CREATE TABLE spend_fold (
    id          BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    horizon     BIGINT NOT NULL CHECK (horizon >= 0),
    folded_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Ledger rows folded by the last run that found any.
    last_rows   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO spend_fold (horizon) VALUES (0);

-- Advisory lock key of the fold ("SPND"): one folder at a time, and a caller that finds it taken does
-- nothing (the other folder is doing the work). A session lock, not the row's lock, so that whoever must
-- pause the fold (a measurement) holds no transaction id while it waits.
CREATE FUNCTION spend_fold_lock_key() RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$ SELECT 1397771844::bigint $$;

-- One fold: returns the rows folded and the new horizon; NULL horizon when another folder holds the lock.
-- READ COMMITTED (the caller's default): the fold statement takes its snapshot after the lock is held, so it
-- sees every fold committed before it.
CREATE FUNCTION spend_fold_run(OUT rows_folded BIGINT, OUT new_horizon BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    rows_folded := 0;
    IF NOT pg_try_advisory_xact_lock(spend_fold_lock_key()) THEN
        RETURN;
    END IF;
    WITH f AS (SELECT horizon AS lo,
                      greatest(horizon, (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint) AS hi
                 FROM spend_fold),
         r AS (SELECT t.wallet_id, (t.created_at AT TIME ZONE 'UTC')::date AS day,
                      spend_kind(t.wallet_id, t.type, t.reference_type, t.reference_id, t.created_at) AS kind,
                      sum(t.amount) AS amount, count(*) AS n
                 FROM f, transactions t
                WHERE t.xact >= f.lo AND t.xact < f.hi AND t.status = 'COMPLETED'
                GROUP BY 1, 2, 3),
         d AS (INSERT INTO spend_daily AS s (wallet_id, day, kind, amount, count)
               SELECT wallet_id, day, kind, amount, n FROM r ORDER BY 1, 2, 3
               ON CONFLICT (wallet_id, day, kind) DO UPDATE
                  SET amount = s.amount + EXCLUDED.amount, count = s.count + EXCLUDED.count),
         m AS (INSERT INTO spend_monthly AS s (wallet_id, month, kind, amount, count)
               SELECT wallet_id, date_trunc('month', day)::date, kind, sum(amount), sum(n) FROM r
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
               ON CONFLICT (wallet_id, month, kind) DO UPDATE
                  SET amount = s.amount + EXCLUDED.amount, count = s.count + EXCLUDED.count),
         n AS (SELECT coalesce(sum(n), 0)::bigint AS n FROM r),
         u AS (UPDATE spend_fold s SET horizon = f.hi, folded_at = now(),
                      last_rows = CASE WHEN n.n > 0 THEN n.n ELSE s.last_rows END
                 FROM f, n RETURNING s.horizon)
    SELECT n.n, u.horizon INTO rows_folded, new_horizon FROM n, u;
END $$;
