-- Holds: authorize, then capture or void (the contract's "Holds" section).
--
-- A hold reserves money without moving it. Its wallet's actor admits it against the available balance
-- (balance minus what open holds reserve) and against the budgets of its day, in the same serialized step
-- as debits; the database keeps the result guarded:
-- - `wallets.reserved` is what the wallet's open holds still reserve, written in the same version-guarded
--   UPDATE as the balance, and `reserved <= balance` is a CHECK, so no write of any process can spend
--   reserved money or reserve money that is not there;
-- - `wallets.hold_expires_at` is the soonest expiry among them, so a reader knows without a scan whether
--   `balance - reserved` is still the available balance (a hold stops reserving at its expiry, before any
--   sweep has written it);
-- - `budgets.held_amount` is the part of `used_amount` that open holds reserve.

ALTER TABLE wallets
    ADD COLUMN reserved DECIMAL(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN hold_expires_at TIMESTAMPTZ,
    ADD CONSTRAINT reserved_within_balance CHECK (reserved >= 0 AND reserved <= balance);

ALTER TABLE budgets
    ADD COLUMN held_amount DECIMAL(15,2) NOT NULL DEFAULT 0,
    ADD CONSTRAINT non_negative_held CHECK (held_amount >= 0);

CREATE TABLE holds (
    hold_id          UUID PRIMARY KEY,
    wallet_id        UUID NOT NULL REFERENCES wallets(wallet_id),
    amount           DECIMAL(15,2) NOT NULL,
    captured_amount  DECIMAL(15,2) NOT NULL DEFAULT 0,
    status           VARCHAR(20) NOT NULL,
    reference_id     VARCHAR(100),
    reference_type   VARCHAR(50),
    description      TEXT,
    metadata         JSONB,
    -- The budgets the hold was charged to at its creation; captures keep their part, releases give back.
    budgets          UUID[] NOT NULL DEFAULT '{}',
    expires_at       TIMESTAMPTZ NOT NULL,
    created_by       UUID NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,

    CONSTRAINT positive_hold_amount CHECK (amount > 0),
    CONSTRAINT non_negative_captured CHECK (captured_amount >= 0),
    CONSTRAINT valid_hold_status CHECK (status IN ('PENDING', 'PARTIALLY_CAPTURED', 'CAPTURED', 'VOIDED', 'EXPIRED')),
    CONSTRAINT expires_after_creation CHECK (expires_at > created_at)
);

-- `(wallet, reference_type, reference_id)` is unique among holds, as among debits.
CREATE UNIQUE INDEX idx_holds_reference ON holds(wallet_id, reference_type, reference_id)
    WHERE reference_id IS NOT NULL AND reference_type IS NOT NULL;
-- A wallet's open holds (loaded with the wallet by its actor).
CREATE INDEX idx_holds_open_of_wallet ON holds(wallet_id) WHERE status IN ('PENDING', 'PARTIALLY_CAPTURED');
-- The expiry sweep: open holds by expiry.
CREATE INDEX idx_holds_expiry ON holds(expires_at) WHERE status IN ('PENDING', 'PARTIALLY_CAPTURED');
-- A wallet's holds, newest first (GET /wallets/{id}/holds).
CREATE INDEX idx_holds_wallet_created ON holds(wallet_id, created_at DESC, hold_id DESC);

-- A capture is a DEBIT row that names its hold.
ALTER TABLE transactions ADD COLUMN hold_id UUID;
