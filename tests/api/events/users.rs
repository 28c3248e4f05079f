//! UserCreated → the user is recorded (e-mail encrypted), a wallet in the configured currency is created
//! and announced with WalletCreated, and the configured default budgets are set up — once.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use wallet_actors::Currency;

use crate::helpers::amqp::app_on_vhost;
use crate::helpers::app::{TestApp, fast_events};
use crate::helpers::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_created_records_the_user_creates_a_wallet_and_its_default_budgets_once() {
    let builder = TestApp::builder().events(fast_events()).configure(|cfg| {
        cfg.default_currency = Currency::Gbp;
        cfg.default_budgets = wallet_service::service::budgets::parse_defaults("user:MONTHLY:1000.00,*:YEARLY:5000.00")
            .expect("defaults");
    });
    let (_vhost, mut app, broker) = app_on_vhost(builder).await;
    let tap = broker.tap().await;

    let (user, company) = (Uuid::new_v4(), Uuid::new_v4());
    let data = json!({"user_id": user, "email": "Ada@Example.com", "company_id": company, "role": "user"});
    let event = Uuid::now_v7();
    broker.publish_event(event, "UserCreated", data.clone()).await;
    broker.publish_event(event, "UserCreated", data.clone()).await;
    broker.publish_event(Uuid::now_v7(), "UserCreated", data).await;

    let created = tap
        .wait_for("WalletCreated", |p| p.body["event_type"] == "WalletCreated")
        .await;
    assert_eq!(created.routing_key, "wallet.created");
    assert_eq!(created.message_id.as_deref(), created.body["event_id"].as_str());
    let d = &created.body["data"];
    assert_eq!(d["user_id"], user.to_string());
    assert_eq!(d["initial_balance"], "0.00");
    assert_eq!(d["currency"], "GBP");
    let wallet = Uuid::parse_str(d["wallet_id"].as_str().unwrap()).unwrap();

    let c = app.db.client().await;
    wait_until("both UserCreated events are processed", || async {
        app.count(
            "SELECT count(*) FROM processed_events WHERE event_type = 'UserCreated'",
            &[],
        )
        .await
            == 2
    })
    .await;
    let row = c
        .query_one(
            "SELECT company_id, role, email_encrypted FROM users WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), company);
    assert_eq!(row.get::<_, &str>(1), "user");
    let encrypted: Vec<u8> = row.get(2);
    assert!(
        !String::from_utf8_lossy(&encrypted).contains("Example.com"),
        "the e-mail is stored encrypted"
    );
    assert_eq!(app.decrypt_pii(&encrypted), "Ada@Example.com");
    let wallets: i64 = c
        .query_one("SELECT count(*) FROM wallets WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wallets, 1);
    let budgets: Vec<(String, String)> = c
        .query(
            "SELECT period_type, total_amount::text FROM budgets WHERE wallet_id = $1 ORDER BY period_type",
            &[&wallet],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        budgets,
        vec![
            ("MONTHLY".into(), "1000.00".into()),
            ("YEARLY".into(), "5000.00".into())
        ]
    );
    wait_until("every outbox row is published", || async {
        app.unpublished().await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tap.of_type("WalletCreated").len(), 1, "one wallet, one WalletCreated");

    // The booking path finds the new wallet.
    broker.booking_created("b1", user, "0.01", "GBP").await;
    tap.wait_for("the refusal (the new wallet is empty)", |p| {
        p.body["event_type"] == "TransactionFailed" && p.body["data"]["wallet_id"] == wallet.to_string()
    })
    .await;
    app.stop().await;
    assert_eq!(broker.ready_in_queue().await, 0);
}
