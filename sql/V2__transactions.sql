-- Transactions, range-partitioned by month on created_at (design 8.2).
--
-- A partitioned table's unique keys must include the partition key, so the primary key is
-- (txn_id, created_at). To keep txn_id itself globally unique, created_at is *derived from* txn_id:
-- txn ids are UUIDv7 and created_at must equal the id's embedded millisecond timestamp (checked below).
-- Two rows with the same txn_id therefore have the same created_at, and the primary key refuses them.

CREATE FUNCTION wallet_uuid_v7_time(id UUID) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT TIMESTAMPTZ 'epoch'
         + (('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint) * INTERVAL '1 millisecond'
$$;

CREATE TABLE transactions (
    txn_id          UUID NOT NULL,
    wallet_id       UUID NOT NULL REFERENCES wallets(wallet_id),
    amount          DECIMAL(15,2) NOT NULL,
    type            VARCHAR(20) NOT NULL,
    description     TEXT,
    reference_id    VARCHAR(100),
    reference_type  VARCHAR(50),
    status          VARCHAR(20) NOT NULL DEFAULT 'PENDING',
    metadata        JSONB,
    balance_after   DECIMAL(15,2) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    PRIMARY KEY (txn_id, created_at),
    CONSTRAINT non_zero_amount CHECK (amount != 0),
    CONSTRAINT positive_amount CHECK (amount > 0),
    CONSTRAINT non_negative_balance_after CHECK (balance_after >= 0),
    CONSTRAINT valid_type CHECK (type IN ('CREDIT', 'DEBIT', 'TRANSFER_IN', 'TRANSFER_OUT')),
    CONSTRAINT valid_status CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    CONSTRAINT created_at_is_txn_id_time CHECK (created_at = wallet_uuid_v7_time(txn_id))
) PARTITION BY RANGE (created_at);

-- History queries: one wallet, newest first.
CREATE INDEX idx_transactions_wallet_created ON transactions(wallet_id, created_at DESC, txn_id DESC);
CREATE INDEX idx_transactions_reference ON transactions(reference_id, reference_type);

-- Creates the monthly partitions from `months_back` months ago to `months_ahead` months ahead, if missing.
-- Called by the migrations and periodically by the service, so inserts never find their month missing.
CREATE FUNCTION ensure_transaction_partitions(months_back INT, months_ahead INT) RETURNS INT
LANGUAGE plpgsql AS $$
DECLARE
    m DATE;
    created INT := 0;
    part TEXT;
BEGIN
    FOR i IN -months_back..months_ahead LOOP
        m := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        part := format('transactions_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF transactions FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 100)',
                part, (m::timestamp AT TIME ZONE 'UTC'), ((m + INTERVAL '1 month')::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

SELECT ensure_transaction_partitions(1, 3);

-- Global uniqueness of references: a booking is debited once and refunded at most once, per wallet.
-- Kept outside the partitioned table so it can be enforced across all months.
CREATE TABLE transaction_references (
    wallet_id       UUID NOT NULL REFERENCES wallets(wallet_id),
    reference_type  VARCHAR(50) NOT NULL,
    reference_id    VARCHAR(100) NOT NULL,
    type            VARCHAR(20) NOT NULL,
    txn_id          UUID NOT NULL,
    amount          DECIMAL(15,2) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (wallet_id, reference_type, reference_id, type)
);
