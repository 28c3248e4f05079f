-- The tamper-evident ledger (issue 13): a hash chain per wallet, and checkpoints over the chains' heads.
--
-- Every ledger row and every audited non-money event of a wallet (status change, budget created or
-- changed, hold placed or released) carries `chain_seq` (1, 2, ... per wallet), `prev_hash`, `hash` =
-- SHA-256(prev_hash || canonical encoding of the row) and the encoding's `chain_version`. The encoding has
-- ONE implementation, in Rust (`wallet_actors::chain`): the wallet's actor hashes the rows it plans, and
-- this migration does not hash anything. Rows written before it are chained once by the service at start,
-- right after the migrations and under their advisory lock (`store::audit::chain_unchained`), so SQL never
-- has to agree with Rust on an encoding.
--
-- Why audit rows stay in `audit_log` (with `wallet_id` and the chain columns) rather than a table of their
-- own: the audit trail stays one table (and the `audit_trail` view stays true), refusals and user changes
-- keep their rows there unchained (`chain_seq IS NULL`: they change no wallet), and the append-only
-- triggers already guard it. `wallet_id` is set exactly on the rows of a wallet's chain.

ALTER TABLE transactions
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN prev_hash BYTEA,
    ADD COLUMN hash BYTEA,
    ADD COLUMN chain_version SMALLINT;

ALTER TABLE audit_log
    ADD COLUMN wallet_id UUID,
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN prev_hash BYTEA,
    ADD COLUMN hash BYTEA,
    ADD COLUMN chain_version SMALLINT;

-- The head: the seq and hash of the wallet's last chained row (0 and 32 zero bytes before the first). It
-- is written in the same version-guarded UPDATE as the balance, so two processes planning from one head
-- cannot both commit: the second fails the version check and re-plans from the new head (no fork).
ALTER TABLE wallets
    ADD COLUMN head_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN head_hash BYTEA NOT NULL DEFAULT decode(repeat('00', 32), 'hex');

-- Verify reads one wallet's chain in seq order. Audit rows: by (wallet, seq). Ledger rows: through the
-- existing (wallet_id, created_at, txn_id) index, sorted by seq in the service; a second index on the
-- partitioned ledger would cost every posting one more b-tree insert on the hot path (issue 6 removed
-- exactly such costs), for a query that reads the wallet's whole history anyway.
CREATE INDEX idx_audit_log_chain ON audit_log(wallet_id, chain_seq) WHERE wallet_id IS NOT NULL;

-- The start-up step looks for rows not chained yet; after it has run once these indexes are empty.
CREATE INDEX idx_transactions_unchained ON transactions(wallet_id) WHERE chain_seq IS NULL;
CREATE INDEX idx_audit_log_unchained ON audit_log(audit_id)
    WHERE chain_seq IS NULL AND outcome = 'APPLIED'
      AND action IN ('wallet.set_status', 'budget.create', 'budget.update', 'hold.place', 'hold.release');

-- Checkpoints: periodically, the Merkle root over the heads of the wallets whose head moved since the last
-- checkpoint, chained to the previous checkpoint's root, so one published value covers the database.
CREATE TABLE audit_checkpoints (
    checkpoint_id  BIGSERIAL PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    prev_root      BYTEA NOT NULL,
    root           BYTEA NOT NULL,
    -- How many wallet heads it records (its rows in audit_checkpoint_heads).
    wallets        INT NOT NULL,
    chain_version  SMALLINT NOT NULL
);

CREATE TABLE audit_checkpoint_heads (
    checkpoint_id  BIGINT NOT NULL REFERENCES audit_checkpoints(checkpoint_id),
    wallet_id      UUID NOT NULL,
    head_seq       BIGINT NOT NULL,
    head_hash      BYTEA NOT NULL,
    PRIMARY KEY (checkpoint_id, wallet_id)
);
-- A wallet's last checkpointed head (what moved since) and its checkpointed heads (verify).
CREATE INDEX idx_checkpoint_heads_wallet ON audit_checkpoint_heads(wallet_id, checkpoint_id DESC);

CREATE FUNCTION audit_checkpoints_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are append-only';
END $$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_are_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_are_append_only();
CREATE TRIGGER audit_checkpoint_heads_no_update BEFORE UPDATE OR DELETE ON audit_checkpoint_heads
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_are_append_only();
CREATE TRIGGER audit_checkpoint_heads_no_truncate BEFORE TRUNCATE ON audit_checkpoint_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_are_append_only();
