//! `POST /transactions/batch`: parse, authorize, read the Idempotency-Key as a `KeyRequest`
//! ([`super::idempotency::key_request`]), call [`crate::service::Service::post_batch_keyed`] (which claims,
//! replays and settles the key), render with [`super::idempotency::reply`] as every keyed route does. Each item is validated as `POST
//! /wallets/{walletId}/transactions` validates its body; a batch with any invalid item is refused as a
//! whole with 400 naming the item's field (`items[3].amount`), and does not consume its key.
//!
//! The body limit of this route alone is [`MAX_BATCH_BODY_BYTES`] (every other route keeps
//! [`super::MAX_BODY_BYTES`]).

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use wallet_actors::{Amount, Direction};
use warp::reply::Response;

use super::handlers::{Annotations, PostType, authenticate, origin, positive};
use super::idempotency::{self, key_request};
use super::problem::{ApiError, raw_json};
use super::{Body, RawHeader};
use crate::http::Ctx;
use crate::service::Posting;
use crate::service::batch::{BATCH_ENDPOINT, BatchItem, BatchPostings, MAX_BATCH_ITEMS};
use crate::views::TransactionView;

/// Largest body of a batch (413 beyond). A 1,000-item batch fits with every text field at its longest
/// even if each character is sent as a `\uXXXX` surrogate pair (500 + 100 + 50 characters × 12 bytes ≈
/// 7.8 KB an item), with about 8 KiB of metadata an item besides: 16 KiB an item.
pub const MAX_BATCH_BODY_BYTES: usize = 16 * 1024 * MAX_BATCH_ITEMS;

/// The path of the route.
pub const BATCH_PATH: &str = "/transactions/batch";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// `true`: every item commits in one transaction or none does. Default `false`: each item stands alone.
    #[serde(default)]
    pub atomic: Option<bool>,
    /// 1 to 1,000 postings, answered in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<BatchItemBody>,
}

/// One posting of a batch: the body of `POST /wallets/{walletId}/transactions` with its `wallet_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemBody {
    pub wallet_id: Uuid,
    /// Decimal string (or JSON number, read exactly), > 0, at most 2 decimals.
    #[schema(value_type = super::openapi::PositiveAmount)]
    pub amount: Amount,
    pub r#type: PostType,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub description: Option<String>,
    /// With `reference_type` (default `EXTERNAL`), unique per wallet and type.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S", example = "booking-42")]
    pub reference_id: Option<String>,
    /// Needs `reference_id`.
    #[schema(min_length = 1, max_length = 50, pattern = r"\S", example = "BOOKING")]
    pub reference_type: Option<String>,
    /// A JSON object; `null` is the same as absent.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// One item's answer (documentation type: the service writes it as text).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchItemResult {
    /// The item's position in `items`, from 0.
    pub index: u32,
    /// The HTTP status a single posting would have answered (201 when applied).
    #[schema(minimum = 200, maximum = 599)]
    pub status: u16,
    /// The committed transaction (when `status` is 2xx).
    pub transaction: Option<TransactionView>,
    /// The problem document a single posting would have answered (otherwise).
    pub error: Option<super::problem::Problem>,
}

/// The reply of a batch (documentation type).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchResults {
    /// One per item, in the order given.
    pub results: Vec<BatchItemResult>,
    /// Independent batches: the items applied.
    pub applied: Option<u32>,
    /// Independent batches: the items not applied.
    pub refused: Option<u32>,
}

/// The item's posting, validated as a single posting's body is; fields are named `items[i].field`.
fn item_posting(i: usize, b: BatchItemBody) -> Result<BatchItem, ApiError> {
    let field = |f: &str| format!("items[{i}].{f}");
    let amount = positive(&field("amount"), b.amount)?;
    let a = Annotations::validate(field, b.description, b.reference_id, b.reference_type, b.metadata)?;
    Ok(BatchItem {
        wallet_id: b.wallet_id,
        posting: Posting {
            direction: match b.r#type {
                PostType::Credit => Direction::Credit,
                PostType::Debit => Direction::Debit,
            },
            amount,
            description: a.description,
            reference_id: a.reference_id,
            reference_type: a.reference_type,
            metadata: a.metadata,
        },
    })
}

/// Many credits and debits in one request (service and admin callers), independent or atomic.
#[utoipa::path(post, path = "/transactions/batch", tag = "transactions", request_body = BatchBody, operation_id = "postTransactionBatch",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters, for the whole batch; a repeat replays the first reply, and a retry after a failure applies each item at most once")),
    responses((status = 200, description = "Independent batch: each item's outcome, in order (`status` is what a single posting would have answered; `error` its problem document)", body = BatchResults),
              (status = 201, description = "Atomic batch: every item committed in one transaction", body = BatchResults),
              (status = 400, description = "VALIDATION_FAILED: a bad field of an item (`items[i].field`), no items or more than 1,000, or a bad Idempotency-Key"),
              (status = 403, description = "FORBIDDEN: only service or admin callers post transactions"),
              (status = 409, description = "IDEMPOTENCY_IN_PROGRESS"),
              (status = 413, description = "PAYLOAD_TOO_LARGE: the body exceeds 16 MB (16,384,000 bytes)"),
              (status = 422, description = "BATCH_REFUSED (atomic: an item would be refused, nothing was applied; `results` names each refused item's problem) or IDEMPOTENCY_KEY_REUSED")))]
pub async fn post_batch(ctx: Arc<Ctx>, auth: RawHeader, key: RawHeader, body: Body) -> Result<Response, ApiError> {
    let caller = authenticate(&ctx, auth)?;
    let body = match body {
        Body::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body exceeds {MAX_BATCH_BODY_BYTES} bytes"),
            ));
        }
        other => other,
    };
    let (b, raw) = super::handlers::parse::<BatchBody>(body)?;
    if b.items.is_empty() || b.items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::validation(
            "items",
            format!("must hold 1 to {MAX_BATCH_ITEMS} items (it holds {})", b.items.len()),
        ));
    }
    let items = b
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| item_posting(i, item))
        .collect::<Result<Vec<_>, _>>()?;
    if !caller.can_move_money() {
        return Err(ApiError::forbidden(
            "only service or admin callers may post transactions",
        ));
    }
    let batch = BatchPostings {
        atomic: b.atomic.unwrap_or(false),
        items,
    };
    let key = key_request(caller.user_id, BATCH_ENDPOINT, key, BATCH_PATH, &raw)?;
    let outcome = ctx.service.post_batch_keyed(batch, origin(&caller, None), key).await;
    idempotency::reply(outcome, |reply| match StatusCode::from_u16(reply.status) {
        Ok(status) => raw_json(status, reply.body),
        Err(e) => ApiError::internal(e).into_response(),
    })
}
