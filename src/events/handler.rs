//! The AMQP adapter's decoding: a consumed message's envelope is read strictly, its `event_type` picks
//! the use case (`crate::service::bookings`), and the [`Outcome`] it returns becomes an ack, a delayed
//! requeue or a dead letter in the consumer.

use serde::Deserialize;
use uuid::Uuid;

use crate::service::Service;
pub use crate::service::bookings::{BOOKING_REFERENCE_TYPE, Done, MAX_EMAIL_LEN, Outcome};
use crate::service::bookings::{BookingCancelled, BookingConfirmed, BookingCreated, UserCreated};

/// Every event body: `{event_id, event_type, timestamp, data}`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<serde_json::Value>,
    pub data: serde_json::Value,
}

/// Which event a message is: its `event_type` decides (the routing key only routes it here).
fn kind_of(event_type: &str) -> Option<&'static str> {
    ["BookingCreated", "BookingCancelled", "BookingConfirmed", "UserCreated"]
        .into_iter()
        .find(|k| *k == event_type)
}

/// Handles one message body (`routing_key` is only reported).
pub async fn handle(service: &Service, body: &[u8], routing_key: &str) -> Outcome {
    // Strictly, as HTTP bodies: one document, and no NUL in any string or key (Postgres would refuse
    // it on every attempt, so such a message is poison, not transient).
    let envelope: Envelope = match crate::decode::strict(body) {
        Ok(e) => e,
        Err(e) => return Outcome::Poison(format!("MALFORMED: not an acceptable event envelope: {e}")),
    };
    let Some(kind) = kind_of(&envelope.event_type) else {
        return Outcome::Poison(format!(
            "UNKNOWN_EVENT_TYPE: {:?} (routing key {routing_key:?})",
            envelope.event_type
        ));
    };
    // A booking is not looked up in the inbox first (one statement per booking saved): its debit's or
    // hold's commit leaves the wallet's batch out when the event was processed before
    // (`Rejection::EventProcessed`), and the record of its refusal is written once. Every other event is
    // looked up, as some of its outcomes (nothing to do, a user's record) are not written with a guard.
    if kind != "BookingCreated" {
        match service.already_processed(envelope.event_id).await {
            Ok(true) => return Outcome::Done(Done::Duplicate),
            Ok(false) => {}
            Err(e) => return Outcome::Transient(e.to_string()),
        }
    }
    let id = envelope.event_id;
    let data = envelope.data;
    match kind {
        "BookingCreated" => match serde_json::from_value::<BookingCreated>(data) {
            Ok(b) => service.booking_created(id, b).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: BookingCreated data: {e}")),
        },
        "BookingCancelled" => match serde_json::from_value::<BookingCancelled>(data) {
            Ok(b) => service.booking_cancelled(id, b).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: BookingCancelled data: {e}")),
        },
        "BookingConfirmed" => match serde_json::from_value::<BookingConfirmed>(data) {
            Ok(b) => service.booking_confirmed(id, b).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: BookingConfirmed data: {e}")),
        },
        _ => match serde_json::from_value::<UserCreated>(data) {
            Ok(u) => service.user_created(id, u).await,
            Err(e) => Outcome::Poison(format!("MALFORMED: UserCreated data: {e}")),
        },
    }
}
