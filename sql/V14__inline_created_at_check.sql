-- The ledger's CHECK that ties created_at to the txn id, with the arithmetic written in the constraint
-- instead of a call of `wallet_uuid_v7_time` (issue 16, docs/BENCHMARKS.md "Where a booking's CPU goes").
--
-- Why: Postgres plans a CHECK constraint again for every INSERT statement, and inlining a SQL function
-- means looking it up, parsing its body and analysing it each time. Measured with a one-row prepared INSERT:
-- 0.325 ms per statement with the function, 0.280 ms with the same expression written inline, 0.250 ms with
-- no CHECK — 45 µs of every ledger INSERT statement, and the service writes one or two per group commit.
--
-- The expression is the body of `wallet_uuid_v7_time` (V7) as it is: the same millisecond count from the
-- id's first 48 bits, added to the same epoch, so it accepts and refuses exactly the rows the old constraint
-- did. The function stays for the SQL that reads times (V11) and for checks.
--
-- How, without holding the ledger locked while it is scanned: the new constraint is added NOT VALID (a brief
-- ACCESS EXCLUSIVE lock, no scan; new rows are checked from then on), the old one dropped and the new one
-- renamed to the old name (errors keep naming `created_at_is_txn_id_time`), then VALIDATE scans the
-- existing rows under SHARE UPDATE EXCLUSIVE, which lets postings go on. An instance of the previous release
-- writes rows the new constraint accepts, so a rolling deploy needs nothing more.

ALTER TABLE transactions ADD CONSTRAINT created_at_is_txn_id_time_inline CHECK (
    created_at = (TIMESTAMP 'epoch'
                  + (('x' || encode(substring(uuid_send(txn_id) FROM 1 FOR 6), 'hex'))::bit(48)::bigint)
                    * INTERVAL '1 millisecond') AT TIME ZONE 'UTC'
) NOT VALID;

ALTER TABLE transactions DROP CONSTRAINT created_at_is_txn_id_time;

ALTER TABLE transactions RENAME CONSTRAINT created_at_is_txn_id_time_inline TO created_at_is_txn_id_time;

ALTER TABLE transactions VALIDATE CONSTRAINT created_at_is_txn_id_time;
