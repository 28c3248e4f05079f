//! Closing a batch for the chain: the audit rows of its non-money changes, and the link of every chained
//! row (its entries, then those audit rows, each in planning order) after the wallet's head.
//!
//! The order inside one batch is fixed here and carries no other meaning: the batch commits as a whole.
//! What matters is that the actor, the wallet's one writer, assigns the seqs and hashes from the head it
//! holds, and that the store writes the new head in the same version-guarded UPDATE as the rows, so a
//! second process planning from the same head loses the version check and re-plans from the new one.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::chain::{self, Head, Row};
use crate::state::{Entry, Origin};
use crate::store::{AuditEvent, BudgetChange, BudgetCreate, HoldChange, HoldEvent, StatusChange, Suspicion};

/// The audited non-money changes of a batch, by kind (what `Draft` gathered).
pub(super) struct Changes<'a> {
    pub(super) wallet_id: Uuid,
    pub(super) status_changes: &'a [StatusChange],
    pub(super) budget_creates: &'a [BudgetCreate],
    pub(super) budget_changes: &'a [BudgetChange],
    pub(super) hold_changes: &'a [HoldChange],
    pub(super) suspicious: &'a [Suspicion],
}

fn event(
    origin: &Origin,
    action: &'static str,
    target_type: &'static str,
    target_id: String,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        action,
        target_type,
        target_id,
        outcome: "APPLIED",
        detail,
        actor_id: origin.actor_id,
        actor_role: origin.role.clone(),
        at: chain::stored_instant(Utc::now()),
        link: None,
    }
}

/// One audit row per status change, budget created or changed, hold placed or released (a capture's own
/// ledger row, which names its hold, is its record).
pub(super) fn audit_events(c: &Changes<'_>) -> Vec<AuditEvent> {
    let wallet_id = c.wallet_id;
    let mut out = Vec::new();
    for s in c.status_changes {
        out.push(event(
            &s.origin,
            "wallet.set_status",
            "wallet",
            wallet_id.to_string(),
            json!({"from": s.from.as_str(), "to": s.to.as_str(), "reason": s.reason}),
        ));
    }
    for b in c.budget_creates {
        let budget = &b.budget;
        out.push(event(
            &b.origin,
            "budget.create",
            "budget",
            budget.budget_id.to_string(),
            json!({
                "wallet_id": wallet_id,
                "total_amount": budget.total.to_string(),
                "period_type": budget.period.as_str(),
                "start_date": budget.start_date,
                "end_date": budget.end_date,
            }),
        ));
    }
    for ch in c.budget_changes {
        out.push(event(
            &ch.origin,
            "budget.update",
            "budget",
            ch.after.budget_id.to_string(),
            json!({
                "wallet_id": wallet_id,
                "old_total": ch.before.total.to_string(),
                "new_total": ch.after.total.to_string(),
                "old_status": ch.before.status.as_str(),
                "new_status": ch.after.status.as_str(),
                "reason": ch.reason,
            }),
        ));
    }
    for ch in c.hold_changes {
        let (action, detail) = match &ch.event {
            HoldEvent::Placed => (
                "hold.place",
                json!({
                    "wallet_id": wallet_id,
                    "amount": ch.hold.amount.to_string(),
                    "reference_id": ch.hold.reference_id,
                    "expires_at": ch.hold.expires_at,
                }),
            ),
            HoldEvent::Captured { .. } => continue,
            HoldEvent::Released { reason, amount } => (
                "hold.release",
                json!({"wallet_id": wallet_id, "amount": amount.to_string(), "reason": reason.as_str()}),
            ),
        };
        out.push(event(&ch.origin, action, "hold", ch.hold.hold_id.to_string(), detail));
    }
    for s in c.suspicious {
        let mut e = event(
            &s.origin,
            "wallet.suspicious",
            "wallet",
            wallet_id.to_string(),
            s.detail.clone(),
        );
        e.outcome = s.rule;
        out.push(e);
    }
    out
}

/// Links one entry after `head`; returns the new head.
pub(crate) fn chain_entry(head: Head, entry: &mut Entry) -> Head {
    let link = chain::link(head, &Row::Ledger((&*entry).into()));
    entry.link = Some(link);
    link.head()
}

/// Links the batch's entries, then its audit rows, after `head`; returns the new head.
pub(super) fn chain_batch(head: Head, wallet_id: Uuid, entries: &mut [Entry], audit: &mut [AuditEvent]) -> Head {
    let mut head = head;
    for e in entries.iter_mut() {
        head = chain_entry(head, e);
    }
    for a in audit.iter_mut() {
        let link = chain::link(head, &Row::Audit(a.chain_row(wallet_id)));
        a.link = Some(link);
        head = link.head();
    }
    head
}
