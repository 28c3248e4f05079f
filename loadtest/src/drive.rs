//! Sending the load: open loop at a fixed arrival rate, or closed loop with a fixed number of clients.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::books::{Acked, ClientLedger, Kind};
use crate::h1::{H1, Reply};
use crate::sched::{RateSchedule, pick};
use crate::setup::Fixture;
use crate::stats::{Outcome, Recorder, RunStats};

/// Longest a client waits for one answer (the engine answers within its 15 s reply timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the harness waits for requests still in flight after the send window closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);

/// Shares of operations, in parts of the total (e.g. 70/10/20).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    pub debit: u32,
    pub credit: u32,
    pub read: u32,
}

impl Mix {
    pub const DEBITS: Mix = Mix {
        debit: 1,
        credit: 0,
        read: 0,
    };
    pub const READS: Mix = Mix {
        debit: 0,
        credit: 0,
        read: 1,
    };
}

/// One request to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write { wallet: usize, cents: i64, kind: Kind },
    Read { user: usize },
}

/// What to send: derived from the request's index and the seed only.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub mix: Mix,
    pub seed: u64,
    /// Amounts are 0.01 ..= max_cents/100.
    pub max_cents: i64,
    pub wallets: usize,
    /// Request i goes to wallet i mod `wallets` instead of a random one.
    pub sequential: bool,
}

impl Workload {
    pub fn op(&self, i: u64) -> Op {
        let total = u64::from(self.mix.debit + self.mix.credit + self.mix.read).max(1);
        let roll = pick(self.seed, i, 0, total);
        let n = self.wallets.max(1) as u64;
        let wallet = if self.sequential {
            i % n
        } else {
            pick(self.seed, i, 1, n)
        } as usize;
        let cents = 1 + pick(self.seed, i, 2, self.max_cents.max(1) as u64) as i64;
        if roll < u64::from(self.mix.debit) {
            Op::Write {
                wallet,
                cents,
                kind: Kind::Debit,
            }
        } else if roll < u64::from(self.mix.debit + self.mix.credit) {
            Op::Write {
                wallet,
                cents,
                kind: Kind::Credit,
            }
        } else {
            Op::Read { user: wallet }
        }
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Requests due at a fixed rate; latency from the intended send time.
    Open { rate: f64 },
    /// `concurrency` clients, each sending its next request when the previous one is answered.
    Closed { concurrency: usize },
}

#[derive(Deserialize)]
struct TxnReply {
    txn_id: Uuid,
}

#[derive(Deserialize)]
struct ProblemReply {
    code: Option<String>,
}

/// Sends requests of one run and records what came back.
pub struct Driver {
    /// The measured requests' client (lean, keep-alive: see [`crate::h1`]).
    pub http: H1,
    /// "Bearer ..." of a service caller (writes) and an admin (reads).
    pub write_auth: String,
    pub read_auth: String,
    pub fixture: Arc<Fixture>,
    pub workload: Workload,
    /// Send an Idempotency-Key with every write (adds the key's claim to each request's work).
    pub idempotency_keys: bool,
    pub run_tag: String,
    rec: Mutex<Recorder>,
    ledger: Mutex<ClientLedger>,
    sent: AtomicU64,
    in_flight: AtomicU64,
}

pub fn http_client(max_idle: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

impl Driver {
    pub fn new(
        http: H1,
        write_token: &str,
        read_token: &str,
        fixture: Arc<Fixture>,
        workload: Workload,
        idempotency_keys: bool,
    ) -> Self {
        Driver {
            http,
            write_auth: format!("Bearer {write_token}"),
            read_auth: format!("Bearer {read_token}"),
            fixture,
            workload,
            idempotency_keys,
            run_tag: Uuid::new_v4().simple().to_string()[..12].to_string(),
            rec: Mutex::new(Recorder::new(Instant::now())),
            ledger: Mutex::new(ClientLedger::default()),
            sent: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Sends request `i`; latency counts from `since` (its intended time in open loop).
    async fn request(&self, i: u64, since: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let op = self.workload.op(i);
        let (kind_label, outcome, acked, unknown) = match op {
            Op::Write { wallet, cents, kind } => {
                let wallet_id = self.fixture.wallets[wallet];
                let body = format!(
                    r#"{{"amount":"{}","type":"{}"}}"#,
                    crate::books::cents_text(cents),
                    kind.as_db()
                );
                let path = format!("/wallets/{wallet_id}/transactions");
                let key = self.idempotency_keys.then(|| format!("lt-{}-{i}", self.run_tag));
                let mut headers = vec![
                    ("authorization", self.write_auth.as_str()),
                    ("content-type", "application/json"),
                ];
                if let Some(k) = &key {
                    headers.push(("idempotency-key", k.as_str()));
                }
                let label = match kind {
                    Kind::Debit => "debit",
                    Kind::Credit => "credit",
                };
                match self.http.request("POST", &path, &headers, Some(body.as_bytes())).await {
                    Ok(Reply { status: 201, body }) => match serde_json::from_slice::<TxnReply>(&body) {
                        Ok(t) => (
                            label,
                            Outcome::Ok,
                            Some(Acked {
                                txn_id: t.txn_id,
                                wallet_id,
                                cents,
                                kind,
                            }),
                            None,
                        ),
                        Err(_) => (label, Outcome::Failed("201 unreadable".into()), None, Some(wallet_id)),
                    },
                    Ok(Reply { status, body }) => {
                        let code = problem_code(&body);
                        // A 5xx may hide a commit (e.g. an unknown outcome): the books allow for it.
                        let unknown = (status >= 500).then_some(wallet_id);
                        (label, Outcome::Failed(format!("{status} {code}")), None, unknown)
                    }
                    // The request may have been applied before the connection failed: unknown outcome.
                    Err(e) => (
                        label,
                        Outcome::Failed(format!("transport {}", e.kind())),
                        None,
                        Some(wallet_id),
                    ),
                }
            }
            Op::Read { user } => {
                let user_id = self.fixture.users[user];
                let path = format!("/wallets/{user_id}");
                let res = self
                    .http
                    .request("GET", &path, &[("authorization", self.read_auth.as_str())], None)
                    .await;
                let outcome = match res {
                    Ok(Reply { status: 200, .. }) => Outcome::Ok,
                    Ok(Reply { status, body }) => Outcome::Failed(format!("{status} {}", problem_code(&body))),
                    Err(e) => Outcome::Failed(format!("transport {}", e.kind())),
                };
                ("read", outcome, None, None)
            }
        };
        let done = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if acked.is_some() || unknown.is_some() {
            let mut l = self.ledger.lock().expect("ledger lock");
            if let Some(a) = acked {
                l.acked.push(a);
            }
            if let Some(w) = unknown {
                *l.unknown.entry(w).or_default() += 1;
            }
        }
        self.rec.lock().expect("recorder lock").record(
            kind_label,
            done.saturating_duration_since(since),
            done,
            outcome,
        );
    }

    /// Runs the load for `duration` and returns what was measured and what the clients were told.
    pub async fn run(
        self: &Arc<Self>,
        mode: Mode,
        duration: Duration,
        max_in_flight: usize,
        bar: &ProgressBar,
        plain_progress: bool,
    ) -> (RunStats, ClientLedger) {
        let start = Instant::now();
        *self.rec.lock().expect("recorder lock") = Recorder::new(start);
        *self.ledger.lock().expect("ledger lock") = ClientLedger::default();
        self.sent.store(0, Ordering::Relaxed);
        let (offered, send_window) = send(self, start, mode, duration, max_in_flight, bar, plain_progress).await;
        let stats =
            self.rec
                .lock()
                .expect("recorder lock")
                .finish(self.sent.load(Ordering::Relaxed), offered, send_window);
        let mut ledger = std::mem::take(&mut *self.ledger.lock().expect("ledger lock"));
        // Requests abandoned after the drain timeout have an unknown outcome too.
        let lost_in_flight = stats.sent.saturating_sub(stats.completed);
        if lost_in_flight > 0 {
            for w in &self.fixture.wallets {
                *ledger.unknown.entry(*w).or_default() += lost_in_flight;
            }
        }
        (stats, ledger)
    }
}

impl Load for Driver {
    fn status_line(&self, now: Instant) -> String {
        let r = self.rec.lock().expect("recorder lock");
        progress_line(
            "requests",
            &r,
            now,
            self.sent.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        )
    }

    async fn exec(&self, i: u64, since: Instant) {
        self.request(i, since).await
    }
}

/// One kind of load ([`Driver`]'s requests, `http-holds`' pairs): what [`send`] runs and reports.
pub(crate) trait Load: Send + Sync + 'static {
    /// The progress line: what was sent and answered so far.
    fn status_line(&self, now: Instant) -> String;
    /// Runs operation `i` and records it; latency counts from `since` (its intended time in open loop).
    fn exec(&self, i: u64, since: Instant) -> impl std::future::Future<Output = ()> + Send;
}

/// A progress line: `unit` sent, answered and failed, the rate answered, the last second's p99.
pub(crate) fn progress_line(unit: &str, r: &Recorder, now: Instant, sent: u64, in_flight: u64) -> String {
    let secs = now.saturating_duration_since(r.started()).as_secs_f64().max(1e-3);
    let p99 = r
        .recent_p99_ms(now)
        .map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
    format!(
        "{unit} sent {sent} ok {} failed {} | {:.0} ok/s | p99 last s {p99} | in flight {in_flight}",
        r.ok(),
        r.failed(),
        r.ok() as f64 / secs,
    )
}

/// How often the progress bar is redrawn, and how many redraws apart a plain progress line is printed.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
const PLAIN_PROGRESS_EVERY_TICKS: u64 = 20;

/// Sends `load`'s operations from `start` for `duration`: open loop at a fixed rate (at most
/// `max_in_flight` outstanding; a wait for room counts as latency), then drains what is in flight for up to
/// [`DRAIN_TIMEOUT`]; or closed loop, each client sending its next operation when the last is answered.
/// Returns the offered rate (open loop) and the send window.
pub(crate) async fn send<L: Load>(
    load: &Arc<L>,
    start: Instant,
    mode: Mode,
    duration: Duration,
    max_in_flight: usize,
    bar: &ProgressBar,
    plain_progress: bool,
) -> (Option<f64>, Duration) {
    bar.set_length(duration.as_millis() as u64);
    bar.set_position(0);
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (load, bar, done) = (load.clone(), bar.clone(), done.clone());
        let plain = plain_progress && (bar.is_hidden() || !std::io::stderr().is_terminal());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                let line = load.status_line(now);
                bar.set_position((now - start).as_millis().min(duration.as_millis()) as u64);
                bar.set_message(line.clone());
                n += 1;
                if plain && n.is_multiple_of(PLAIN_PROGRESS_EVERY_TICKS) {
                    eprintln!("  [{:>5.1}s] {line}", (now - start).as_secs_f64());
                }
            }
        })
    };
    let sent = match mode {
        Mode::Open { rate } => send_open(load, start, rate, duration, max_in_flight, bar).await,
        Mode::Closed { concurrency } => send_closed(load, start, concurrency, duration).await,
    };
    done.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.set_position(duration.as_millis() as u64);
    sent
}

async fn send_open<L: Load>(
    load: &Arc<L>,
    start: Instant,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    bar: &ProgressBar,
) -> (Option<f64>, Duration) {
    let sched = RateSchedule::new(rate).expect("rate validated by the caller");
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..sched.total_for(duration) {
        let due = start + sched.offset(i);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        // Waiting for a permit delays the send but not the intended time: the wait is latency.
        let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
        let load = load.clone();
        tasks.spawn(async move {
            load.exec(i, due).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let window = start.elapsed();
    bar.set_message(format!("draining {} in flight", tasks.len()));
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    (Some(rate), window)
}

async fn send_closed<L: Load>(
    load: &Arc<L>,
    start: Instant,
    concurrency: usize,
    duration: Duration,
) -> (Option<f64>, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (load, next) = (load.clone(), next.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                load.exec(i, Instant::now()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (None, duration)
}

pub(crate) fn problem_code(body: &[u8]) -> String {
    serde_json::from_slice::<ProblemReply>(body)
        .ok()
        .and_then(|p| p.code)
        .unwrap_or_else(|| "-".into())
}

/// Writes per wallet index in a workload's first `n` requests (used by tests).
pub fn writes_per_wallet(w: &Workload, n: u64) -> HashMap<usize, u64> {
    let mut m = HashMap::new();
    for i in 0..n {
        if let Op::Write { wallet, .. } = w.op(i) {
            *m.entry(wallet).or_default() += 1;
        }
    }
    m
}

/// What a GET phase asks for: request `i`'s path, from the seed alone.
pub type PathOf = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// Whether a 200's body is what the phase expects.
pub type BodyCheck = fn(&[u8]) -> bool;

/// `clients` closed-loop clients GETting `path(i)` for `duration`; a reply other than 200 is a failure,
/// and so is a 200 that `check` refuses.
pub async fn closed_gets(
    client: Arc<H1>,
    auth: &str,
    clients: usize,
    duration: Duration,
    kind: &'static str,
    path: PathOf,
    check: BodyCheck,
) -> RunStats {
    let started = Instant::now();
    let until = started + duration;
    let recorder = Arc::new(Mutex::new(Recorder::new(started)));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let auth = format!("Bearer {auth}");
    let mut tasks = vec![];
    for _ in 0..clients.max(1) {
        let (client, recorder, next, auth, path) = (
            client.clone(),
            recorder.clone(),
            next.clone(),
            auth.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = path(i);
                let sent = Instant::now();
                let reply = client.request("GET", &p, &[("authorization", &auth)], None).await;
                let done = Instant::now();
                let outcome = match reply {
                    Ok(r) if r.status == 200 && check(&r.body) => Outcome::Ok,
                    Ok(r) if r.status == 200 => Outcome::Failed("200 with a body the check refused".into()),
                    Ok(r) => Outcome::Failed(format!("status {}", r.status)),
                    Err(e) => Outcome::Failed(format!("transport {}", e.kind())),
                };
                if let Ok(mut rec) = recorder.lock() {
                    rec.record(kind, done - sent, done, outcome);
                }
            }
        }));
    }
    for t in tasks {
        // A panicked client task loses only its own count; the recorder keeps what it saw.
        let _ = t.await;
    }
    let sent = next.load(std::sync::atomic::Ordering::Relaxed);
    let rec = recorder.lock().map(|r| r.finish(sent, None, duration));
    match rec {
        Ok(stats) => stats,
        Err(poisoned) => poisoned.into_inner().finish(sent, None, duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_is_honoured_and_amounts_stay_in_range() {
        let w = Workload {
            mix: Mix {
                debit: 7,
                credit: 1,
                read: 2,
            },
            seed: 9,
            max_cents: 100,
            wallets: 50,
            sequential: false,
        };
        let (mut d, mut c, mut r) = (0, 0, 0);
        for i in 0..100_000 {
            match w.op(i) {
                Op::Write {
                    wallet,
                    cents,
                    kind: Kind::Debit,
                } => {
                    assert!(wallet < 50 && (1..=100).contains(&cents));
                    d += 1;
                }
                Op::Write { kind: Kind::Credit, .. } => c += 1,
                Op::Read { user } => {
                    assert!(user < 50);
                    r += 1;
                }
            }
        }
        assert!((68_000..72_000).contains(&d), "{d}");
        assert!((9_000..11_000).contains(&c), "{c}");
        assert!((18_000..22_000).contains(&r), "{r}");
        assert_eq!(w.op(1234), w.op(1234), "deterministic");
    }

    #[test]
    fn a_single_wallet_workload_always_hits_it() {
        let w = Workload {
            mix: Mix::DEBITS,
            seed: 1,
            max_cents: 100,
            wallets: 1,
            sequential: false,
        };
        assert_eq!(writes_per_wallet(&w, 1000), HashMap::from([(0, 1000)]));
    }

    #[test]
    fn a_sequential_workload_touches_every_wallet_once_per_round() {
        let w = Workload {
            mix: Mix::DEBITS,
            seed: 1,
            max_cents: 100,
            wallets: 1000,
            sequential: true,
        };
        let m = writes_per_wallet(&w, 3000);
        assert_eq!(m.len(), 1000);
        assert!(m.values().all(|n| *n == 3));
    }
}
