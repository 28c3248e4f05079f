-- What the budget checks need beyond the design's tables.

-- Thresholds (percent) already announced with a BudgetExceeded event: each is announced once per budget.
ALTER TABLE budgets ADD COLUMN alerted_thresholds SMALLINT[] NOT NULL DEFAULT '{}';

-- Which budgets each debit was charged to, so its refund gives the amount back to exactly those budgets
-- (even after their period has ended or they were suspended), never more than was charged.
CREATE TABLE budget_charges (
    txn_id     UUID NOT NULL,
    budget_id  UUID NOT NULL REFERENCES budgets(budget_id),
    wallet_id  UUID NOT NULL REFERENCES wallets(wallet_id),
    amount     DECIMAL(15,2) NOT NULL CHECK (amount > 0),
    refunded   DECIMAL(15,2) NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (txn_id, budget_id),
    CONSTRAINT refund_within_charge CHECK (refunded <= amount)
);
CREATE INDEX idx_budget_charges_budget ON budget_charges(budget_id);
