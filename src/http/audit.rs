//! The audit route: `GET /admin/audit/verify` (admin only), the HTTP face of `wallet-service audit verify`.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;
use warp::reply::Response;

use super::RawHeader;
use super::handlers::authenticate;
use super::problem::{ApiError, json_response};
use crate::auth::Role;
use crate::http::Ctx;
use crate::service::audit::{Scope, Verified, VerifyError};
use crate::views::{AuditVerifyView, BrokenRowView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    wallet_id: Option<Uuid>,
    since: Option<i64>,
}

/// Recomputes the hash chains (one wallet's, or every wallet's and every checkpoint's) and answers with
/// the first broken row.
#[utoipa::path(get, path = "/admin/audit/verify", tag = "audit", operation_id = "verifyAudit",
    params(("wallet_id" = Option<Uuid>, Query, description = "Verify this wallet's chain only (default: every wallet and every checkpoint)"),
           ("since" = Option<i64>, Query, description = "Trust the database up to this checkpoint: verify each wallet's rows after its head as of it")),
    responses((status = 200, description = "The verdict: `ok: true`, or `ok: false` with the first broken row", body = AuditVerifyView),
              (status = 400, description = "VALIDATION_FAILED: a bad query parameter"),
              (status = 401, description = "UNAUTHENTICATED"),
              (status = 403, description = "FORBIDDEN: admins only"),
              (status = 404, description = "NOT_FOUND: no such wallet or checkpoint")))]
pub async fn verify(ctx: Arc<Ctx>, auth: RawHeader, query: String) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    if caller.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin may verify the audit chains"));
    }
    let q: VerifyQuery = serde_urlencoded::from_str(&query)
        .map_err(|_| ApiError::validation("query", "wallet_id must be a UUID and since a checkpoint id"))?;
    let scope = Scope {
        wallet: q.wallet_id,
        since: q.since,
    };
    match ctx.service.auditor().verify(scope).await {
        Ok(v) => Ok(json_response(StatusCode::OK, &view(&v))),
        Err(VerifyError::WalletNotFound) => Err(ApiError::not_found("wallet")),
        Err(VerifyError::CheckpointNotFound) => Err(ApiError::not_found("checkpoint")),
        Err(VerifyError::Store(e)) => Err(e.into()),
    }
}

fn view(v: &Verified) -> AuditVerifyView {
    AuditVerifyView {
        ok: v.ok,
        wallets: v.wallets,
        rows: v.rows,
        checkpoints: v.checkpoints,
        broken: v.broken.as_ref().map(|b| BrokenRowView {
            wallet_id: b.wallet_id,
            seq: b.seq,
            table: b.table,
            id: b.id.clone(),
            fault: b.what.kind(),
            what: b.what.describe(),
        }),
    }
}
