//! Events through a real RabbitMQ (a vhost of its own per test, `helpers::amqp`) and a real Postgres:
//! bookings debited and refunded once whatever the broker redelivers (`bookings`), users and their wallets
//! (`users`), poison dead-lettered with its reason (`poison`), the outbox relay (`relay`), graceful stops
//! and a database that goes away (`resilience`), connections closed by the broker (`reconnect`).

mod bookings;
mod poison;
mod reconnect;
mod relay;
mod resilience;
mod users;
