//! The booking consumer of the real binary through broker-side connection losses: a stream of 300
//! `BookingCreated` events, with duplicates (the same message again, and the same booking under a new
//! event id) and poison (malformed messages, and bookings of a user nobody announced), while the broker
//! closes the service's consumer connection twice mid-stream (through the management API, as a broker
//! restart or a network cut would). Every booking is debited exactly once, every poison message is
//! dead-lettered, nothing else is, and the queue keeps flowing to empty.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use super::{conclude, ms};
use crate::helpers::amqp::{Broker, Vhost, envelope};
use crate::helpers::audit::{Auditor, booking_debits};
use crate::helpers::database::TestDatabase;
use crate::helpers::fixtures::Bank;
use crate::helpers::service::{ServiceConfig, ServiceProcess};
use crate::helpers::{eventually, paths, within};

const BOOKINGS: usize = 300;
const USERS: usize = 10;
/// The service's consumer connection, as it names itself to the broker.
const CONSUMER_CONNECTION: &str = "wallet-service consumer";
/// Messages published between two short pauses (the stream lasts a few seconds).
const BURST: usize = 10;
const PAUSE: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(45);

/// A message of the stream.
struct Message {
    body: Vec<u8>,
    message_id: Option<Uuid>,
    poison: bool,
}

fn booking_event(event_id: Uuid, booking: &str, user: Uuid) -> Message {
    let data =
        json!({"booking_id": booking, "user_id": user, "amount": "1.00", "currency": "USD", "description": "Hotel"});
    Message {
        body: envelope(event_id, "BookingCreated", data).to_string().into_bytes(),
        message_id: Some(event_id),
        poison: false,
    }
}

fn poison(body: Vec<u8>, message_id: Option<Uuid>) -> Message {
    Message {
        body,
        message_id,
        poison: true,
    }
}

/// The stream: every booking once, plus duplicates and poison interleaved.
fn stream(bookings: &[(String, Uuid, Uuid)]) -> (Vec<Message>, usize, usize) {
    let mut out = Vec::new();
    let mut duplicates = 0;
    for (i, (booking, user, event_id)) in bookings.iter().enumerate() {
        out.push(booking_event(*event_id, booking, *user));
        if i % 10 == 9 {
            // The same message again (a redelivery or a producer's retry).
            let (b, u, e) = &bookings[i - 3];
            out.push(booking_event(*e, b, *u));
            duplicates += 1;
        }
        if i % 25 == 12 {
            // The same booking under a new event id.
            let (b, u, _) = &bookings[i - 5];
            out.push(booking_event(Uuid::now_v7(), b, *u));
            duplicates += 1;
        }
        if i % 50 == 20 {
            let id = Uuid::now_v7();
            out.push(match (i / 50) % 4 {
                0 => poison(format!("{{not json {i}").into_bytes(), None),
                1 => poison(json!({"hello": "world", "n": i}).to_string().into_bytes(), None),
                2 => {
                    let data = json!({"booking_id": format!("bad-{i}"), "user_id": user, "amount": "1.005", "currency": "USD"});
                    poison(envelope(id, "BookingCreated", data).to_string().into_bytes(), Some(id))
                }
                _ => poison(envelope(id, "BookingTeleported", json!({})).to_string().into_bytes(), Some(id)),
            });
        }
        if i == BOOKINGS / 5 || i == BOOKINGS * 3 / 5 {
            // A booking of a user nobody announced: retried, then dead-lettered.
            let id = Uuid::now_v7();
            let mut m = booking_event(id, &format!("stranger-{i}"), Uuid::new_v4());
            m.poison = true;
            out.push(m);
        }
    }
    let poisoned = out.iter().filter(|m| m.poison).count();
    (out, duplicates, poisoned)
}

/// The service's consumer connections, once the management API lists one (it lists new connections with a
/// short delay); empty if none shows up within [`WAIT`].
async fn consumer_connections(vhost: &Vhost) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let names = vhost.connections(CONSUMER_CONNECTION).await;
        if !names.is_empty() || Instant::now() >= deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consumer_survives_its_connection_closed_twice_with_duplicates_and_poison() {
    within(Duration::from_secs(170), "the consumer-connection test", async {
        let started = Instant::now();
        let vhost = Vhost::create().await;
        let db = TestDatabase::create().await;
        let svc = ServiceProcess::start("consumer", ServiceConfig::new(&db.url).with_amqp(&vhost.amqp_url())).await;
        let users = Bank::new(&svc.base_url()).open_wallets(USERS, "1000.00").await;
        let run = paths::unique();
        let bookings: Vec<(String, Uuid, Uuid)> = (0..BOOKINGS)
            .map(|i| (format!("bk-{run}-{i}"), users[i % USERS].user_id, Uuid::now_v7()))
            .collect();
        let (messages, duplicates, poisoned) = stream(&bookings);
        let poison_bodies: HashSet<Vec<u8>> = messages.iter().filter(|m| m.poison).map(|m| m.body.clone()).collect();
        let published = messages.len();

        let publisher = Arc::new(Broker::connect(&vhost).await);
        let sent = Arc::new(AtomicUsize::new(0));
        let publishing = {
            let (publisher, sent) = (publisher.clone(), sent.clone());
            tokio::spawn(async move {
                for (i, m) in messages.iter().enumerate() {
                    publisher
                        .publish_booking("booking.created", &m.body, m.message_id)
                        .await;
                    sent.store(i + 1, Ordering::Release);
                    if i % BURST == BURST - 1 {
                        tokio::time::sleep(PAUSE).await;
                    }
                }
            })
        };

        let auditor = Auditor::connect(&db.url).await;
        let debited = || async {
            auditor
                .count(
                    "SELECT count(*) FROM transactions WHERE reference_type = 'BOOKING' AND type = 'DEBIT'",
                    &[],
                )
                .await
        };
        let mut closes = Vec::new();
        // Mid-stream by construction: when a third and two thirds of the stream are published.
        for at in [published / 3, published * 2 / 3] {
            let reached = eventually(WAIT, || async { sent.load(Ordering::Acquire) >= at }).await;
            let names = consumer_connections(&vhost).await;
            let debited_at_close = debited().await;
            let closed_at = Instant::now();
            for n in &names {
                vhost.close_connection(n).await;
            }
            // Recovered: the service says it is ready again (after it noticed), the broker lists a new
            // consumer connection (its listing lags by its statistics interval), and bookings move again.
            let (mut not_ready_seen, mut ready_again, mut relisted, mut flowing) = (false, None, None, None);
            while closed_at.elapsed() < WAIT && (relisted.is_none() || flowing.is_none() || ready_again.is_none()) {
                let ready = svc.ready_status().await == Some(200);
                not_ready_seen |= !ready;
                if ready && not_ready_seen && ready_again.is_none() {
                    ready_again = Some(closed_at.elapsed());
                }
                if relisted.is_none() {
                    let now = vhost.connections(CONSUMER_CONNECTION).await;
                    if now.iter().any(|c| !names.contains(c)) {
                        relisted = Some(closed_at.elapsed());
                        // A drop the service did not even notice as not-ready: ready all along.
                        if ready && !not_ready_seen {
                            ready_again = relisted;
                        }
                    }
                }
                if flowing.is_none() && debited().await > debited_at_close {
                    flowing = Some(closed_at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closes.push(json!({
                "at_published": sent.load(Ordering::Acquire),
                "at_debits": debited_at_close,
                "reached": reached,
                "closed": names.len(),
                "not_ready_seen": not_ready_seen,
                "ready_again_ms": ready_again.map(ms),
                "relisted_ms": relisted.map(ms),
                "flowing_again_ms": flowing.map(ms),
            }));
        }
        publishing.await.expect("every message published");

        let all_debited = eventually(WAIT, || async { debited().await >= BOOKINGS as i64 }).await;
        let dlq = publisher.topology.dead_letter_queue.clone();
        let all_dead = eventually(WAIT, || async {
            publisher.ready_count(&dlq).await as usize >= poisoned
        })
        .await;
        let queue = publisher.topology.queue.clone();
        let drained = eventually(WAIT, || async {
            publisher.ready_count(&queue).await == 0 && vhost.unacknowledged(&queue).await == Some(0)
        })
        .await;
        let dead = publisher.dead_letters().await;

        // Every booking debited exactly once, and nothing else debited.
        let per_booking = booking_debits(&db.client().await).await;
        let missing = bookings.iter().filter(|(b, _, _)| !per_booking.contains_key(b)).count();
        let doubled = per_booking.values().filter(|n| **n > 1).count();
        let known: HashSet<&String> = bookings.iter().map(|(b, _, _)| b).collect();
        let unexpected = per_booking.keys().filter(|b| !known.contains(b)).count();
        let mut balance_breaks = Vec::new();
        for w in &users {
            // 1000.00 less one 1.00 debit per booking of the user.
            let expected = Decimal::from(1000 - (BOOKINGS / USERS) as i64);
            let balance = auditor.balance(w.wallet_id).await;
            if balance != expected {
                balance_breaks.push(format!("{}: {balance}, expected {expected}", w.wallet_id));
            }
        }
        let bank_breaks = auditor.bank_breaks().await;
        let good_dead_lettered = dead.iter().filter(|d| !poison_bodies.contains(&d.body)).count();
        // Every poison message at least once (a close between the dead letter's confirm and the original's
        // ack may dead-letter it twice: at least once is what the broker promises).
        let dead_bodies: HashSet<Vec<u8>> = dead.iter().map(|d| d.body.clone()).collect();
        let poison_missing = poison_bodies.difference(&dead_bodies).count();
        let reasons: Vec<String> = dead.iter().filter_map(|d| d.reason.clone()).collect();
        let ready_at_end = svc.ready_status().await;

        let figures = json!({
                "operations": published,
                "bookings": BOOKINGS,
                "duplicates": duplicates,
                "poison": poisoned,
                "found": per_booking.len(),
                "doubled": doubled,
                "lost": missing,
                "unexpected": unexpected,
                "dead_lettered": dead.len(),
                "good_dead_lettered": good_dead_lettered,
                "poison_not_dead_lettered": poison_missing,
                "dead_letter_duplicates": dead.len() - dead_bodies.len(),
                "closes": closes,
                "recovery_ms": closes.iter().map(|c| c["ready_again_ms"].clone()).collect::<Vec<_>>(),
                "bank_breaks": bank_breaks.len(),
                "balance_breaks": balance_breaks.len(),
                "ready_at_end": ready_at_end,
                "elapsed_ms": ms(started.elapsed()),
        });

        let mut violations = Vec::new();
        for (ok, what) in [
            (all_debited, "not every booking was debited in time"),
            (
                all_dead,
                "not every poison message reached the dead-letter queue in time",
            ),
            (
                drained,
                "the queue did not drain (ready or unacknowledged messages left)",
            ),
            (missing == 0, "bookings not debited"),
            (doubled == 0, "bookings debited more than once"),
            (unexpected == 0, "debits of bookings never published"),
            (poison_missing == 0, "poison messages not dead-lettered"),
            (good_dead_lettered == 0, "good messages dead-lettered"),
            (
                balance_breaks.is_empty(),
                "balances differ from 1000.00 minus the bookings",
            ),
            (bank_breaks.is_empty(), "balance != initial + ledger"),
            (ready_at_end == Some(200), "/ready is not 200 at the end"),
        ] {
            if !ok {
                violations.push(what.to_string());
            }
        }
        for c in &closes {
            let recovered = ["ready_again_ms", "relisted_ms", "flowing_again_ms"]
                .iter()
                .all(|k| !c[*k].is_null());
            if !recovered || c["closed"] == 0 || c["reached"] == false {
                violations.push(format!("a connection close did not recover: {c}"));
            }
        }
        let context = format!(
            "missing {missing}, doubled {doubled}, dead {} of {poisoned} ({reasons:?}), balances {balance_breaks:?}, \
             bank {bank_breaks:?}\nservice log: {}",
            dead.len(),
            svc.log_path().display()
        );
        conclude(
            "the_consumer_survives_its_connection_closed_twice_with_duplicates_and_poison",
            figures,
            violations,
            context,
        );
    })
    .await;
}
