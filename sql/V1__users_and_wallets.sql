-- Users (recorded from UserCreated or PUT /users) and their wallets. Design section 3, plus what the
-- contract needs: encrypted e-mail with a keyed hash for look-ups, wallets.version for guarded writes,
-- wallets.initial_balance so a balance can always be re-derived from its transaction rows.

CREATE TABLE users (
    user_id          UUID PRIMARY KEY,
    -- AES-256-GCM (nonce || ciphertext || tag) under PII_ENCRYPTION_KEY; never stored in clear.
    email_encrypted  BYTEA NOT NULL,
    -- HMAC-SHA256 of the normalized e-mail under a key derived from PII_ENCRYPTION_KEY.
    email_hash       BYTEA NOT NULL,
    company_id       UUID NOT NULL,
    role             VARCHAR(20) NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT valid_role CHECK (role IN ('user', 'manager', 'admin', 'service'))
);
CREATE INDEX idx_users_email_hash ON users(email_hash);
CREATE INDEX idx_users_company_id ON users(company_id);

-- fillfactor leaves room on each page so balance updates stay HOT (no index on balance/version).
CREATE TABLE wallets (
    wallet_id        UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          UUID NOT NULL REFERENCES users(user_id),
    balance          DECIMAL(15,2) NOT NULL DEFAULT 0.00,
    initial_balance  DECIMAL(15,2) NOT NULL DEFAULT 0.00,
    currency         VARCHAR(3) NOT NULL DEFAULT 'USD',
    status           VARCHAR(20) NOT NULL DEFAULT 'ACTIVE',
    version          BIGINT NOT NULL DEFAULT 1,
    created_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT positive_balance CHECK (balance >= 0),
    CONSTRAINT non_negative_initial_balance CHECK (initial_balance >= 0),
    CONSTRAINT valid_status CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    CONSTRAINT valid_currency CHECK (currency IN ('USD', 'EUR', 'INR', 'GBP')),
    CONSTRAINT positive_version CHECK (version > 0)
) WITH (fillfactor = 70);

CREATE UNIQUE INDEX idx_wallets_user_id ON wallets(user_id);
CREATE INDEX idx_wallets_status ON wallets(status);
