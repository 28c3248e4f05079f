-- Budgets and their history, as the design writes them (section 3.2). The engine's budget checks come
-- with the budgets work; the tables are here so the schema is whole from the start.

CREATE TABLE budgets (
    budget_id        UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wallet_id        UUID NOT NULL REFERENCES wallets(wallet_id),
    total_amount     DECIMAL(15,2) NOT NULL,
    used_amount      DECIMAL(15,2) NOT NULL DEFAULT 0.00,
    remaining_amount DECIMAL(15,2) GENERATED ALWAYS AS (total_amount - used_amount) STORED,
    period_type      VARCHAR(20) NOT NULL DEFAULT 'MONTHLY',
    start_date       DATE NOT NULL,
    end_date         DATE NOT NULL,
    status           VARCHAR(20) NOT NULL DEFAULT 'ACTIVE',
    created_by       UUID NOT NULL,
    created_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT positive_amounts CHECK (total_amount > 0 AND used_amount >= 0),
    CONSTRAINT used_within_total CHECK (used_amount <= total_amount),
    CONSTRAINT valid_period CHECK (end_date > start_date),
    CONSTRAINT valid_period_type CHECK (period_type IN ('WEEKLY', 'MONTHLY', 'QUARTERLY', 'YEARLY')),
    CONSTRAINT valid_status CHECK (status IN ('ACTIVE', 'EXPIRED', 'SUSPENDED'))
);

CREATE INDEX idx_budgets_wallet_id ON budgets(wallet_id);
CREATE INDEX idx_budgets_period ON budgets(start_date, end_date);
CREATE INDEX idx_budgets_status ON budgets(status);

CREATE TABLE budget_history (
    history_id    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    budget_id     UUID NOT NULL REFERENCES budgets(budget_id),
    old_amount    DECIMAL(15,2),
    new_amount    DECIMAL(15,2) NOT NULL,
    change_reason TEXT NOT NULL,
    changed_by    UUID NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_budget_history_budget ON budget_history(budget_id, created_at DESC);
