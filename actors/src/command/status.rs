//! `Command::SetStatus`: freezing, unfreezing or closing a wallet. CLOSED is final.

use super::{Draft, Planned};
use crate::outcome::Rejection;
use crate::state::{Origin, WalletStatus};
use crate::store::StatusChange;

/// Plans the status change; the commands after it in the batch are judged under the new status.
pub(super) fn plan(
    draft: &mut Draft,
    origin: &Origin,
    status: WalletStatus,
    reason: &Option<String>,
) -> Result<Planned, Rejection> {
    if draft.sim.status == WalletStatus::Closed {
        return Err(Rejection::WalletClosed);
    }
    draft.status_changes.push(StatusChange {
        from: draft.sim.status,
        to: status,
        reason: reason.clone(),
        origin: origin.clone(),
    });
    draft.sim.status = status;
    Ok(Planned::Status)
}
