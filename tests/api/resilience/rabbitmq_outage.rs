//! RabbitMQ refusing the service (its user's permissions on the test's vhost taken away and its connections
//! closed, as a broker that is down would refuse them; the shared broker itself keeps running): HTTP debits
//! keep succeeding — their events wait in the outbox — while the publisher's and the consumer's breakers open
//! and `/ready` answers 503; given back, both breakers close by themselves, the outbox drains and a booking
//! is consumed again, with no restart of the service.

use std::time::{Duration, Instant};

use super::{breaker_series, debit, metrics, sample};
use crate::helpers::amqp::{Broker, Vhost};
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::{Bank, service_token};
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, within};

/// How long the breakers may take to open (five failed connects, with backoff), and to close again.
const WITHIN: Duration = Duration::from_secs(40);
/// Debits made while the broker refuses the service.
const DEBITS_DURING: usize = 10;
const BREAKERS: [&str; 2] = ["rabbitmq_publisher", "rabbitmq_consumer"];

async fn breakers_read(base: &str, state: f64) -> bool {
    let text = metrics(base).await;
    BREAKERS
        .iter()
        .all(|d| sample(&text, &breaker_series(d)) == Some(state))
}

async fn unpublished(db: &TestDatabase) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[])
        .await
        .expect("count the outbox")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rabbitmq_refusing_the_service_debits_still_succeed_and_events_are_published_once_it_is_back() {
    within(Duration::from_secs(150), "the RabbitMQ outage test", async {
        let vhost = Vhost::create().await;
        let db = TestDatabase::create().await;
        let config = ServiceConfig::new(&db.url).with_amqp(&vhost.amqp_url());
        let svc = ServiceProcess::start("rabbitmq-outage", config).await;
        let base = svc.base_url();
        let wallet = Bank::new(&base).open_wallet("100.00").await;
        let (http, token) = (reqwest::Client::new(), service_token());
        assert!(breakers_read(&base, 0.0).await, "closed at first");

        // The management API lists connections a few seconds late: wait for both of the service's.
        let listed = eventually(WITHIN, || async {
            !vhost.connections("publisher").await.is_empty() && !vhost.connections("consumer").await.is_empty()
        })
        .await;
        assert!(
            listed,
            "the service's publisher and consumer connections were not listed within {WITHIN:?}"
        );
        vhost.revoke().await;
        for name in vhost.connections("").await {
            vhost.close_connection(&name).await;
        }
        for i in 0..DEBITS_DURING {
            let res = debit(&http, &base, &token, wallet.wallet_id, "1.00", &format!("during-{i}")).await;
            assert_eq!(res.status(), 201, "debit {i} while RabbitMQ refuses the service");
        }
        let opened = eventually(WITHIN, || breakers_read(&base, 2.0)).await;
        assert!(
            opened,
            "the RabbitMQ breakers did not open within {WITHIN:?}; log {}",
            svc.log_path().display()
        );
        assert_eq!(
            svc.ready_status().await,
            Some(503),
            "/ready while the consumer is detached"
        );
        assert!(
            unpublished(&db).await >= DEBITS_DURING as i64,
            "the debits' events wait in the outbox"
        );
        vhost.grant().await;
        let started = Instant::now();
        let back = eventually(WITHIN, || async {
            breakers_read(&base, 0.0).await && svc.ready_status().await == Some(200) && unpublished(&db).await == 0
        })
        .await;
        assert!(
            back,
            "within {WITHIN:?} of RabbitMQ's return: breakers closed, /ready 200 and the outbox drained; log {}",
            svc.log_path().display()
        );

        // The consumer is back: a booking published now is debited (its exactly-once is `events::bookings`').
        let broker = Broker::connect(&vhost).await;
        broker
            .booking_created("after-outage", wallet.user_id, "5.00", "USD")
            .await;
        let debited = eventually(WITHIN, || async {
            db.balance(wallet.wallet_id).await == format!("{}.00", 100 - DEBITS_DURING - 5)
        })
        .await;
        assert!(debited, "the booking published after the outage was not debited");
        assert!(
            svc.starts == 1,
            "the service was not restarted ({:?} after the return)",
            started.elapsed()
        );
    })
    .await;
}
