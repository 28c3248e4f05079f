//! Documentation-only types of the OpenAPI document (utoipa schemas for amounts and the contract's enums),
//! below both the reply shapes (`views`) and the HTTP adapter, so each can name them. Nothing here runs
//! on a request.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// A positive amount in a request: a decimal string (at most 2 decimals, at most 9999999999999.99) or a
/// JSON number read exactly from its text.
pub struct PositiveAmount;
/// A non-negative amount in a request (an opening balance).
pub struct NonNegativeAmount;
/// An amount in a reply: always a decimal string with exactly 2 decimals.
pub struct Money;

/// Decimal string of a positive amount with at most 2 decimals and at most 13 integer digits.
pub const POSITIVE_AMOUNT_PATTERN: &str = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,12}(\.[0-9]{1,2})?)$";
/// Decimal string of a non-negative amount.
pub const AMOUNT_PATTERN: &str = r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$";
/// Amounts as the service writes them.
pub const MONEY_PATTERN: &str = r"^[0-9]{1,13}\.[0-9]{2}$";
/// The largest amount (DECIMAL(15,2)).
pub const MAX_AMOUNT_TEXT: &str = "9999999999999.99";
/// Text that is not blank: at least one character that is not white space (the service trims).
pub const NOT_BLANK_PATTERN: &str = r"\S";
/// An `Idempotency-Key`: visible ASCII, no surrounding blanks (HTTP strips them).
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]([ -~]*[!-~])?$";

/// Placeholder schemas: the components are filled in by `http::openapi::complete`, which writes JSON Schema that utoipa's
/// builders cannot express (`oneOf` of a pattern string and a bounded number).
macro_rules! component {
    ($t:ty, $name:literal) => {
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::Object(
                    ObjectBuilder::new().schema_type(Type::String).build(),
                ))
            }
        }
        impl ToSchema for $t {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}
component!(PositiveAmount, "PositiveAmount");
component!(NonNegativeAmount, "NonNegativeAmount");
component!(Money, "Money");

/// The enums of the contract, as the wire spells them (documentation types; the service's own enums live
/// in `wallet-actors`, which does not depend on utoipa).
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub mod enums {
    use utoipa::ToSchema;

    #[derive(ToSchema)]
    pub enum Currency {
        USD,
        EUR,
        INR,
        GBP,
    }

    #[derive(ToSchema)]
    pub enum WalletStatus {
        ACTIVE,
        FROZEN,
        CLOSED,
    }

    #[derive(ToSchema)]
    pub enum PeriodType {
        WEEKLY,
        MONTHLY,
        QUARTERLY,
        YEARLY,
    }

    /// A budget's status; past its end_date a budget is EXPIRED.
    #[derive(ToSchema)]
    pub enum BudgetStatus {
        ACTIVE,
        SUSPENDED,
        EXPIRED,
    }

    /// The statuses a budget may be set to.
    #[derive(ToSchema)]
    pub enum BudgetStatusChange {
        ACTIVE,
        SUSPENDED,
    }

    #[derive(ToSchema)]
    pub enum TransactionType {
        CREDIT,
        DEBIT,
        TRANSFER_IN,
        TRANSFER_OUT,
    }

    #[derive(ToSchema)]
    pub enum TransactionStatus {
        PENDING,
        COMPLETED,
        FAILED,
        CANCELLED,
    }

    /// A hold's status as of the reply: an open hold past its expires_at is EXPIRED.
    #[derive(ToSchema)]
    pub enum HoldStatus {
        PENDING,
        PARTIALLY_CAPTURED,
        CAPTURED,
        VOIDED,
        EXPIRED,
    }

    #[derive(ToSchema)]
    pub enum Role {
        user,
        manager,
        admin,
        service,
    }
}
