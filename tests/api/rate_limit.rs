//! RATE_LIMIT_PER_SECOND: a caller over its limit gets 429 RATE_LIMITED with Retry-After; others do not.
use std::num::NonZeroU32;

use serde_json::Value;
use uuid::Uuid;
use wallet_service::auth::Role;

use crate::helpers::app::TestApp;
use crate::helpers::fixtures::token;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_limit_gets_429_and_others_are_not_affected() {
    let app = TestApp::builder()
        .configure(|cfg| cfg.rate_limit_per_second = NonZeroU32::new(5))
        .spawn()
        .await;
    let (user, company, _) = app.user_with_wallet("10.00", "USD").await;
    let busy = token(Role::User, user, company);
    let mut limited = None;
    // Burst is 2 × 5 = 10: the 11th request within a second is over the limit.
    for _ in 0..30 {
        let res = app.get_as(&busy, &format!("/wallets/{user}")).await;
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let res = limited.expect("the caller was limited within 30 requests");
    assert_eq!(res.headers()["retry-after"], "1");
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "RATE_LIMITED");
    // Another caller (the admin) is unaffected.
    let other = app.get_as(&app.admin_token, &format!("/wallets/{user}")).await;
    assert_eq!(other.status(), 200);
    // And a token of an unknown caller is still 401, not 429.
    let stranger = token(Role::User, Uuid::new_v4(), company);
    let res = app.get_as(&stranger, "/health").await;
    assert_eq!(res.status(), 200);
}
