//! Budget endpoints. Creation and changes go through the wallet's actor (`Ledger`), so the next debit is
//! checked against the new limit at once; reads come from the actor (live budgets) or the store (history).

use std::sync::Arc;

use chrono::NaiveDate;
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::{Amount, BudgetStatus, PeriodType};
use warp::reply::Response;

use super::handlers::{authenticate, origin, parse, visible};
use super::problem::{ApiError, json_response};
use super::{Body, RawHeader};
use crate::http::Ctx;
use crate::views::{BudgetView, HistoryView};

/// Longest change reason kept.
pub const MAX_CHANGE_REASON_LEN: usize = 500;

/// The active budgets of a user's wallet.
#[utoipa::path(get, path = "/budgets/{id}", tag = "budgets", operation_id = "listBudgets",
    params(("id" = Uuid, Path, description = "Here: the wallet owner's **user id** (the same template as `PUT /budgets/{id}`, where it is a budget id)")),
    responses((status = 200, description = "The user's ACTIVE budgets", body = Vec<BudgetView>),
              (status = 404, description = "NOT_FOUND: no wallet for this user, or one the caller may not see")))]
pub async fn list(ctx: Arc<Ctx>, auth: RawHeader, user_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let Some(wallet_id) = ctx.service.wallet_of_user(user_id).await? else {
        return Err(ApiError::not_found("wallet"));
    };
    let w = ctx.service.wallet(wallet_id).await?;
    visible(&caller, &w)?;
    let views: Vec<BudgetView> = w
        .budgets
        .iter()
        .map(BudgetView::from)
        .filter(|v| v.status == BudgetStatus::Active.as_str())
        .collect();
    Ok(json_response(StatusCode::OK, &views))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudgetBody {
    pub wallet_id: Uuid,
    #[schema(value_type = super::openapi::PositiveAmount)]
    pub total_amount: Amount,
    #[schema(value_type = super::openapi::enums::PeriodType)]
    pub period_type: PeriodType,
    pub start_date: NaiveDate,
    /// Inclusive; defaults to the last day of the period holding `start_date`.
    pub end_date: Option<NaiveDate>,
}

/// Creates a budget (manager of the wallet's company, or admin).
#[utoipa::path(post, path = "/budgets", tag = "budgets", request_body = CreateBudgetBody, operation_id = "createBudget",
    responses((status = 201, description = "The new budget", body = BudgetView),
              (status = 400, description = "VALIDATION_FAILED: a bad field, or an end_date not after start_date"),
              (status = 403, description = "FORBIDDEN: only a manager of the wallet's company or an admin"),
              (status = 404, description = "NOT_FOUND: no such wallet, or one the caller may not see"),
              (status = 409, description = "WALLET_NOT_ACTIVE (the wallet is closed) or CONFLICT (the wallet has the most budgets allowed)")))]
pub async fn create(ctx: Arc<Ctx>, auth: RawHeader, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, _) = parse::<CreateBudgetBody>(body)?;
    if b.total_amount.is_zero() {
        return Err(ApiError::validation("total_amount", "must be greater than zero"));
    }
    let end = b.end_date.unwrap_or_else(|| b.period_type.end_of(b.start_date));
    if end <= b.start_date {
        let msg = if b.end_date.is_some() {
            "must be after start_date"
        } else {
            "start_date is the last day of its period; give an end_date after it"
        };
        return Err(ApiError::validation("end_date", msg));
    }
    let w = ctx.service.wallet(b.wallet_id).await?;
    visible(&caller, &w)?;
    if !caller.can_manage(w.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the wallet's company or an admin may create budgets",
        ));
    }
    let budget = ctx
        .service
        .create_budget(
            b.wallet_id,
            b.total_amount,
            b.period_type,
            b.start_date,
            end,
            origin(&caller, None),
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &BudgetView::from(&budget)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudgetBody {
    /// Not below the budget's used_amount.
    #[schema(value_type = Option<super::openapi::PositiveAmount>)]
    pub total_amount: Option<Amount>,
    #[schema(value_type = Option<super::openapi::enums::BudgetStatusChange>)]
    pub status: Option<BudgetStatus>,
    /// Kept in the budget's history.
    #[schema(min_length = 1, max_length = 500, pattern = r"\S", example = "Q3 travel freeze")]
    pub change_reason: String,
}

/// Changes a budget's total and/or status; writes a history row.
#[utoipa::path(put, path = "/budgets/{id}", tag = "budgets", request_body = UpdateBudgetBody, operation_id = "updateBudget",
    params(("id" = Uuid, Path, description = "Here: the **budget id** (the same template as `GET /budgets/{id}`, where it is a user id)")),
    responses((status = 200, description = "The changed budget", body = BudgetView),
              (status = 400, description = "VALIDATION_FAILED: a bad field, or neither total_amount nor status given"),
              (status = 403, description = "FORBIDDEN: only a manager of the wallet's company or an admin"),
              (status = 404, description = "NOT_FOUND: no such budget, or one the caller may not see"),
              (status = 409, description = "CONFLICT: the budget has expired"),
              (status = 422, description = "BUDGET_EXCEEDED: total_amount below the used_amount (`budget_id`, `used_amount`)")))]
pub async fn update(ctx: Arc<Ctx>, auth: RawHeader, budget_id: Uuid, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let (b, _) = parse::<UpdateBudgetBody>(body)?;
    let reason = b.change_reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_CHANGE_REASON_LEN {
        return Err(ApiError::validation(
            "change_reason",
            format!("must be 1 to {MAX_CHANGE_REASON_LEN} characters"),
        ));
    }
    if b.total_amount.is_some_and(|t| t.is_zero()) {
        return Err(ApiError::validation("total_amount", "must be greater than zero"));
    }
    if b.status == Some(BudgetStatus::Expired) {
        return Err(ApiError::validation("status", "must be ACTIVE or SUSPENDED"));
    }
    if b.total_amount.is_none() && b.status.is_none() {
        return Err(ApiError::validation("body", "give total_amount and/or status"));
    }
    let wallet_id = wallet_of_budget(&ctx, budget_id).await?;
    let w = ctx.service.wallet(wallet_id).await?;
    visible(&caller, &w).map_err(|_| ApiError::not_found("budget"))?;
    if !caller.can_manage(w.company_id) {
        return Err(ApiError::forbidden(
            "only a manager of the wallet's company or an admin may change budgets",
        ));
    }
    let budget = ctx
        .service
        .update_budget(
            wallet_id,
            budget_id,
            b.total_amount,
            b.status,
            reason,
            origin(&caller, None),
        )
        .await
        .map_err(|r| match r {
            // Not among the wallet's live budgets: it exists (we found its wallet), so it has expired.
            wallet_actors::Rejection::BudgetNotFound => wallet_actors::Rejection::BudgetExpired.into(),
            other => {
                let mut e = ApiError::from(other);
                if e.code == "BUDGET_EXCEEDED" {
                    e.extra_mut().budget_id = Some(budget_id);
                }
                e
            }
        })?;
    Ok(json_response(StatusCode::OK, &BudgetView::from(&budget)))
}

/// A budget's change history, newest first.
#[utoipa::path(get, path = "/budgets/{budgetId}/history", tag = "budgets", operation_id = "budgetHistory",
    params(("budgetId" = Uuid, Path, description = "The budget's id")),
    responses((status = 200, description = "The budget's changes, newest first", body = Vec<HistoryView>),
              (status = 404, description = "NOT_FOUND: no such budget, or one the caller may not see")))]
pub async fn history(ctx: Arc<Ctx>, auth: RawHeader, budget_id: Uuid) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let wallet_id = wallet_of_budget(&ctx, budget_id).await?;
    let w = ctx.service.wallet(wallet_id).await?;
    visible(&caller, &w).map_err(|_| ApiError::not_found("budget"))?;
    let rows = ctx.service.budget_history(wallet_id, budget_id).await?;
    Ok(json_response(StatusCode::OK, &rows))
}

async fn wallet_of_budget(ctx: &Ctx, budget_id: Uuid) -> Result<Uuid, ApiError> {
    ctx.service
        .wallet_of_budget(budget_id)
        .await?
        .ok_or_else(|| ApiError::not_found("budget"))
}
