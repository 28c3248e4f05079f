//! Callers and their tokens (HS256, minted with the library's own `mint_hs256`), users and wallets over HTTP.
//! One secret for every test: the in-process app's configuration and the binary's `JWT_SECRET` alike.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::{Caller, Role, mint_hs256};

/// The service's `JWT_SECRET` in these tests.
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const ISSUER: &str = "user-management";
pub const AUDIENCE: &str = "wallet-service";
/// Long enough for any test, restarts included.
const TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);

/// A valid token for a caller.
pub fn token(role: Role, sub: Uuid, company: Uuid) -> String {
    let caller = Caller {
        user_id: sub,
        role,
        company_id: company,
    };
    mint_hs256(JWT_SECRET.as_bytes(), ISSUER, AUDIENCE, &caller, TOKEN_TTL)
}

/// A caller with the `admin` role, of a company of its own.
pub fn admin_token() -> String {
    token(Role::Admin, Uuid::new_v4(), Uuid::new_v4())
}

/// A caller with the `service` role (the booking services' role: may move money). Its keys are scoped to
/// its `sub`, so one test keeps one service caller across restarts.
pub fn service_token() -> String {
    token(Role::Service, Uuid::new_v4(), Uuid::new_v4())
}

/// The body of `POST /budgets`: a MONTHLY budget of `total` on `wallet` over ten days from yesterday.
pub fn budget_body(wallet: Uuid, total: &str) -> Value {
    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let end = start + chrono::Duration::days(10);
    json!({"wallet_id": wallet, "total_amount": total, "period_type": "MONTHLY", "start_date": start, "end_date": end})
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Wallet {
    pub user_id: Uuid,
    pub company_id: Uuid,
    pub wallet_id: Uuid,
}

/// Sets up users and wallets as an admin.
pub struct Bank {
    http: reqwest::Client,
    base_url: String,
    admin: String,
}

impl Bank {
    /// As an admin of its own.
    pub fn new(base_url: &str) -> Bank {
        Bank::with_admin(base_url, &admin_token())
    }

    /// As the admin of this token.
    pub fn with_admin(base_url: &str, admin: &str) -> Bank {
        Bank {
            http: reqwest::Client::new(),
            base_url: base_url.to_string(),
            admin: admin.to_string(),
        }
    }

    /// `PUT /users/{user}` as the admin.
    pub async fn put_user(&self, user: Uuid, company: Uuid, role: &str) -> reqwest::Response {
        self.http
            .put(format!("{}/users/{user}", self.base_url))
            .bearer_auth(&self.admin)
            .json(&json!({"email": format!("{user}@example.com"), "company_id": company, "role": role}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT /users: {e}"))
    }

    /// Records a user and opens their wallet with `balance` USD.
    pub async fn open_wallet(&self, balance: &str) -> Wallet {
        self.open_wallet_in(balance, "USD").await
    }

    /// Records a user (of a company of its own) and opens their wallet with `balance` in `currency`.
    pub async fn open_wallet_in(&self, balance: &str, currency: &str) -> Wallet {
        let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
        expect(self.put_user(user, company, "user").await, "PUT /users", 200).await;
        let res = self
            .http
            .post(format!("{}/wallets", self.base_url))
            .bearer_auth(&self.admin)
            .json(&json!({"user_id": user, "initial_balance": balance, "currency": currency}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /wallets: {e}"));
        let body = expect(res, "POST /wallets", 201).await;
        let wallet_id = body["wallet_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| panic!("wallet_id in {body}"));
        Wallet {
            user_id: user,
            company_id: company,
            wallet_id,
        }
    }

    /// `n` users, each with a wallet of `balance` USD.
    pub async fn open_wallets(&self, n: usize, balance: &str) -> Vec<Wallet> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.open_wallet(balance).await);
        }
        out
    }

    /// The ids of [`Bank::open_wallets`].
    pub async fn open_wallet_ids(&self, n: usize, balance: &str) -> Vec<Uuid> {
        self.open_wallets(n, balance)
            .await
            .iter()
            .map(|w| w.wallet_id)
            .collect()
    }
}

/// Asserts the status of a reply and returns its JSON body.
async fn expect(res: reqwest::Response, what: &str, status: u16) -> Value {
    let got = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}
