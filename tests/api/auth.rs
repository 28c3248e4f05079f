//! JWT validation through HTTP: every way a token can be wrong answers 401 `UNAUTHENTICATED` with
//! `WWW-Authenticate` and the stable `reason` of the check it failed, and the same request with a good
//! token answers 200 (so each refusal is the token's).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::{AUDIENCE, ISSUER, JWT_SECRET};
use crate::helpers::replies::expect_problem;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims that pass, for an admin; tests spoil one thing at a time.
fn good_claims() -> Value {
    json!({
        "sub": Uuid::new_v4().to_string(),
        "role": "admin",
        "company_id": Uuid::new_v4().to_string(),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
    })
}

fn sign(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    wallet_service::auth::install_crypto_provider();
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, JWT_SECRET.as_bytes(), claims)
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A wallet to read, and the app.
async fn setup() -> (TestApp, Uuid) {
    let app = spawn_app().await;
    let (user, _, _) = app.user_with_wallet("1.00", "USD").await;
    (app, user)
}

async fn get_with(app: &TestApp, user: Uuid, authorization: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url(&format!("/wallets/{user}")));
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    req.send().await.expect("request")
}

/// The reasons a 401 may give, and nothing else.
const REASONS: [&str; 8] = [
    "MISSING",
    "MALFORMED",
    "BAD_SIGNATURE",
    "EXPIRED",
    "NOT_YET_VALID",
    "WRONG_ISSUER",
    "WRONG_AUDIENCE",
    "ALGORITHM",
];

/// Asserts the header value is refused with 401, a Bearer challenge and this `reason`, and that the reply
/// says no more than that (no library text).
async fn assert_refused(app: &TestApp, user: Uuid, authorization: Option<&str>, reason: &str) {
    let res = get_with(app, user, authorization).await;
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = expect_problem(res, 401, "UNAUTHENTICATED").await;
    assert!(
        challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")),
        "WWW-Authenticate: {challenge:?}"
    );
    assert_eq!(body["reason"], reason, "{authorization:?}: {body}");
    assert!(REASONS.contains(&reason));
    let detail = body["detail"].as_str().unwrap().to_lowercase();
    for leak in ["invalidtoken", "json", "base64", "error(", "kind", "line ", "column"] {
        assert!(!detail.contains(leak), "the reply carries library text: {detail}");
    }
    let mut members: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["code", "detail", "reason", "status", "title", "type"],
        "nothing but the standard members and the reason: {body}"
    );
}

/// [`assert_refused`] for `Authorization: Bearer <token>`.
async fn assert_token_refused(app: &TestApp, user: Uuid, token: &str, reason: &str) {
    assert_refused(app, user, Some(&format!("Bearer {token}")), reason).await;
}

/// A token whose `claim` is `wrong`, and one without it, are both refused with `reason`.
async fn assert_wrong_or_missing_refused(app: &TestApp, user: Uuid, claim: &str, wrong: Value, reason: &str) {
    assert_token_refused(app, user, &hs256(&with(good_claims(), claim, wrong)), reason).await;
    assert_token_refused(app, user, &hs256(&without(good_claims(), claim)), reason).await;
}

async fn assert_accepted(app: &TestApp, user: Uuid, token: &str) {
    let res = get_with(app, user, Some(&format!("Bearer {token}"))).await;
    assert_eq!(res.status(), 200, "control: a good token is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_token_is_accepted_and_the_scheme_is_case_insensitive() {
    let (app, user) = setup().await;
    let t = hs256(&good_claims());
    assert_accepted(&app, user, &t).await;
    let res = get_with(&app, user, Some(&format!("bearer {t}"))).await;
    assert_eq!(res.status(), 200);
    // nbf in the past and a list audience that includes ours are fine.
    let t = hs256(&with(
        with(good_claims(), "nbf", json!(now() - 10)),
        "aud",
        json!(["other", AUDIENCE]),
    ));
    assert_accepted(&app, user, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_alg_none_is_401() {
    let (app, user) = setup().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good_claims()).unwrap());
    assert_token_refused(&app, user, &format!("{header}.{claims}."), "ALGORITHM").await;
    // Capitalised variants and a kept signature do not help either.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"None","typ":"JWT"}"#);
    assert_token_refused(&app, user, &format!("{header}.{claims}."), "ALGORITHM").await;
    let real = hs256(&good_claims());
    let signature = real.rsplit('.').next().unwrap();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    assert_token_refused(&app, user, &format!("{header}.{claims}.{signature}"), "ALGORITHM").await;
    assert_accepted(&app, user, &real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_wrong_signature_or_another_algorithm_is_401() {
    let (app, user) = setup().await;
    let claims = good_claims();
    let t = sign(Algorithm::HS256, b"another-secret-0123456789abcdef01", &claims);
    assert_token_refused(&app, user, &t, "BAD_SIGNATURE").await;
    // The right secret under another algorithm than the pinned one.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert_token_refused(&app, user, &sign(alg, JWT_SECRET.as_bytes(), &claims), "ALGORITHM").await;
    }
    // A tampered payload under the original signature.
    let good = hs256(&claims);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = with(claims.clone(), "sub", json!(Uuid::new_v4().to_string()));
    let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert_token_refused(
        &app,
        user,
        &format!("{}.{}.{}", parts[0], forged, parts[2]),
        "BAD_SIGNATURE",
    )
    .await;
    assert_accepted(&app, user, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_401() {
    let (app, user) = setup().await;
    let t = hs256(&with(good_claims(), "exp", json!(now() - 3600)));
    assert_token_refused(&app, user, &t, "EXPIRED").await;
    // Beyond the allowed clock skew too.
    let t = hs256(&with(good_claims(), "exp", json!(now() - 120)));
    assert_token_refused(&app, user, &t, "EXPIRED").await;
    // An expired token with a bad signature is a bad signature: claims are only judged once it verifies.
    let t = sign(
        Algorithm::HS256,
        b"another-secret-0123456789abcdef01",
        &with(good_claims(), "exp", json!(now() - 3600)),
    );
    assert_token_refused(&app, user, &t, "BAD_SIGNATURE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_issuer_or_without_one_is_401() {
    let (app, user) = setup().await;
    assert_wrong_or_missing_refused(&app, user, "iss", json!("someone-else"), "WRONG_ISSUER").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_or_without_one_is_401() {
    let (app, user) = setup().await;
    assert_wrong_or_missing_refused(&app, user, "aud", json!("billing-service"), "WRONG_AUDIENCE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_exp_is_401() {
    let (app, user) = setup().await;
    let t = hs256(&without(good_claims(), "exp"));
    assert_token_refused(&app, user, &t, "MALFORMED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_401() {
    let (app, user) = setup().await;
    let t = hs256(&with(good_claims(), "nbf", json!(now() + 3600)));
    assert_token_refused(&app, user, &t, "NOT_YET_VALID").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_bad_identity_claims_is_401() {
    let (app, user) = setup().await;
    for claims in [
        with(good_claims(), "role", json!("root")),
        with(good_claims(), "role", json!("Admin")),
        without(good_claims(), "role"),
        with(good_claims(), "sub", json!("not-a-uuid")),
        without(good_claims(), "sub"),
        with(good_claims(), "company_id", json!(42)),
        without(good_claims(), "company_id"),
    ] {
        assert_token_refused(&app, user, &hs256(&claims), "MALFORMED").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_missing_authorization_header_is_401() {
    let (app, user) = setup().await;
    let good = hs256(&good_claims());
    for header in [
        "Bearer garbage".to_string(),
        "Bearer a.b.c".to_string(),
        "Bearer ".to_string(),
        "Bearer".to_string(),
        format!("Basic {}", URL_SAFE_NO_PAD.encode("admin:admin")),
        good.clone(),
        format!("Token {good}"),
        format!("Bearer {good} extra"),
        format!("Bearer {}", "a".repeat(10_000)),
    ] {
        assert_refused(&app, user, Some(&header), "MALFORMED").await;
    }
    assert_refused(&app, user, None, "MISSING").await;
    // Money-moving and admin endpoints refuse the same way, before looking at the body.
    let res = app
        .http
        .post(app.url(&format!("/wallets/{}/transactions", Uuid::new_v4())))
        .header("Authorization", "Bearer garbage")
        .body("{not even json")
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "UNAUTHENTICATED").await;
    for (method, path) in [
        (reqwest::Method::POST, "/transfers".to_string()),
        (reqwest::Method::PUT, format!("/users/{}", Uuid::new_v4())),
    ] {
        let res = app
            .http
            .request(method, app.url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 401, "UNAUTHENTICATED").await;
    }
    assert_accepted(&app, user, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_header_that_is_not_ascii_is_a_clean_401_malformed() {
    let (app, user) = setup().await;
    for raw in [
        &b"Bearer \xc3\xa9t\xc3\xa9"[..],
        b"Bearer abc\xff.def.ghi",
        b"\xe2\x82\xac",
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(raw).expect("obs-text is a valid header value");
        let res = app
            .http
            .get(app.url(&format!("/wallets/{user}")))
            .header("Authorization", value)
            .send()
            .await
            .unwrap();
        let body = expect_problem(res, 401, "UNAUTHENTICATED").await;
        assert_eq!(body["reason"], "MALFORMED", "{body}");
        let text = body.to_string();
        assert!(!text.contains("Rejection") && !text.contains("InvalidHeader"), "{text}");
    }
    assert_accepted(&app, user, &hs256(&good_claims())).await;
}
