//! Callers and their tokens (HS256, minted with the library's own `mint_hs256`), users and wallets over HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::{Caller, Role, mint_hs256};

/// The service's `JWT_SECRET` in these tests.
pub const JWT_SECRET: &str = "fault-suite-secret-0123456789abcdef0123";
const ISSUER: &str = "user-management";
const AUDIENCE: &str = "wallet-service";
/// Long enough for any test, restarts included.
const TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);

pub fn token(role: Role, sub: Uuid, company: Uuid) -> String {
    let caller = Caller {
        user_id: sub,
        role,
        company_id: company,
    };
    mint_hs256(JWT_SECRET.as_bytes(), ISSUER, AUDIENCE, &caller, TOKEN_TTL)
}

/// A caller with the `service` role (the booking services' role: may move money). Its keys are scoped to
/// its `sub`, so one test keeps one service caller across restarts.
pub fn service_token() -> String {
    token(Role::Service, Uuid::new_v4(), Uuid::new_v4())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Wallet {
    pub user_id: Uuid,
    pub wallet_id: Uuid,
}

/// Sets up users and wallets as an admin.
pub struct Bank {
    http: reqwest::Client,
    base_url: String,
    admin: String,
}

impl Bank {
    pub fn new(base_url: &str) -> Bank {
        Bank {
            http: reqwest::Client::new(),
            base_url: base_url.to_string(),
            admin: token(Role::Admin, Uuid::new_v4(), Uuid::new_v4()),
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str, expect: u16) -> Value {
        let res = req
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(status, expect, "{what}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }

    /// Records a user and opens their wallet with `balance` USD.
    pub async fn open_wallet(&self, balance: &str) -> Wallet {
        let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
        let put = self
            .http
            .put(format!("{}/users/{user}", self.base_url))
            .json(&json!({"email": format!("{user}@example.com"), "company_id": company, "role": "user"}));
        self.call(put, "PUT /users", 200).await;
        let post = self
            .http
            .post(format!("{}/wallets", self.base_url))
            .json(&json!({"user_id": user, "initial_balance": balance, "currency": "USD"}));
        let body = self.call(post, "POST /wallets", 201).await;
        let wallet_id = body["wallet_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| panic!("wallet_id in {body}"));
        Wallet {
            user_id: user,
            wallet_id,
        }
    }

    pub async fn open_wallets(&self, n: usize, balance: &str) -> Vec<Wallet> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.open_wallet(balance).await);
        }
        out
    }
}
