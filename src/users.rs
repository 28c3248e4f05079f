//! Recording users: shared by `PUT /users/{userId}` and the `UserCreated` consumer. The e-mail is PII:
//! it is stored encrypted, with a keyed hash beside it for look-ups.

use uuid::Uuid;
use wallet_actors::Origin;

use crate::app::Ctx;
use crate::auth::Role;
use crate::http::handlers::{user_audit, user_view};
use crate::http::problem::ApiError;
use crate::views::UserView;

pub async fn upsert(
    ctx: &Ctx,
    user_id: Uuid,
    email: &str,
    company_id: Uuid,
    role: Role,
    origin: &Origin,
) -> Result<UserView, ApiError> {
    let encrypted = ctx.pii.encrypt(email);
    let hash = ctx.pii.email_lookup_hash(email);
    let row = ctx
        .ledger
        .store
        .upsert_user(
            user_id,
            &encrypted,
            &hash,
            company_id,
            role.as_str(),
            user_audit(origin, user_id, company_id, role),
        )
        .await?;
    user_view(ctx, &row)
}
