//! `http-bulk`: closed-loop clients sending `POST /transactions/batch` (independent items, default 1,000
//! debits each on wallets picked at random), and what the books must say afterwards.
//!
//! Each item is recorded as one request of kind `item` whose latency is its batch's (the figure that
//! compares with rows per second of the raw-SQL bulk baseline); the batches' own latency is reported
//! beside it. Every applied item (status 201 in its batch) is a 201 for the books check; a batch without
//! an answer makes its items' outcomes unknown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Deserialize;
use uuid::Uuid;

use crate::books::{Acked, ClientLedger, Kind, cents_text};
use crate::sched::pick;
use crate::setup::Fixture;
use crate::stats::{Outcome, Recorder, RunStats, Summary, new_hist, record_latency, summarize};

/// Items per batch unless told otherwise: the service's most.
pub const DEFAULT_BATCH_ITEMS: usize = 1000;

#[derive(Deserialize)]
struct BatchReply {
    results: Vec<ItemReply>,
}

#[derive(Deserialize)]
struct ItemReply {
    status: u16,
    transaction: Option<TxnReply>,
    error: Option<ProblemReply>,
}

#[derive(Deserialize)]
struct TxnReply {
    txn_id: Uuid,
}

#[derive(Deserialize)]
struct ProblemReply {
    code: String,
}

/// What a bulk run measured: per item (`stats`), per batch (`batches`), and what the clients were told.
pub struct BulkRun {
    pub stats: RunStats,
    pub batches: u64,
    pub batch_latency: Summary,
    pub ledger: ClientLedger,
}

/// Runs `clients` closed-loop clients for `duration`, each sending batches of `items` debits of 0.01 to
/// `max_cents / 100` on wallets of `fixture` picked at random (seeded per client).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    fixture: Arc<Fixture>,
    clients: usize,
    items: usize,
    max_cents: i64,
    seed: u64,
    duration: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<BulkRun> {
    let started = Instant::now();
    let until = started + duration;
    let recorder = Arc::new(Mutex::new(Recorder::new(started)));
    let ledger = Arc::new(Mutex::new(ClientLedger::default()));
    let batch_hist = Arc::new(Mutex::new(new_hist()));
    let batches = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let url = format!("{base_url}/transactions/batch");
    let mut tasks = Vec::new();
    for client in 0..clients.max(1) {
        let (http, url, token) = (http.clone(), url.clone(), token.to_string());
        let (fixture, recorder, ledger, batch_hist, batches) = (
            fixture.clone(),
            recorder.clone(),
            ledger.clone(),
            batch_hist.clone(),
            batches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Item i of this client: a wallet and an amount from the seed alone (see `sched::pick`).
            let mut i: u64 = 0;
            let stream = client as u64 * 2;
            while Instant::now() < until {
                let plan: Vec<(Uuid, i64)> = (0..items)
                    .map(|_| {
                        i += 1;
                        let w = fixture.wallets[pick(seed, i, stream, fixture.wallets.len() as u64) as usize];
                        (w, 1 + pick(seed, i, stream + 1, max_cents as u64) as i64)
                    })
                    .collect();
                let body = serde_json::json!({"items": plan.iter().map(|(w, c)| serde_json::json!({
                    "wallet_id": w, "amount": cents_text(*c), "type": "DEBIT"})).collect::<Vec<_>>()});
                let sent = Instant::now();
                let answer = http.post(&url).bearer_auth(&token).json(&body).send().await;
                let reply = match answer {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        match res.bytes().await {
                            Ok(b) if status == 200 => {
                                serde_json::from_slice::<BatchReply>(&b).map_err(|e| e.to_string())
                            }
                            Ok(_) => Err(format!("batch {status}")),
                            Err(e) => Err(format!("transport {e}")),
                        }
                    }
                    Err(e) => Err(format!(
                        "transport {}",
                        if e.is_timeout() { "timeout" } else { "error" }
                    )),
                };
                let done = Instant::now();
                let latency = done - sent;
                batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                record_latency(&mut batch_hist.lock().expect("histogram"), latency);
                let mut rec = recorder.lock().expect("recorder");
                let mut led = ledger.lock().expect("ledger");
                match reply {
                    Ok(r) => {
                        for ((wallet_id, cents), item) in plan.iter().zip(r.results) {
                            match (item.status, item.transaction, item.error) {
                                (201, Some(t), _) => {
                                    rec.record("item", latency, done, Outcome::Ok);
                                    led.acked.push(Acked {
                                        txn_id: t.txn_id,
                                        wallet_id: *wallet_id,
                                        cents: *cents,
                                        kind: Kind::Debit,
                                    });
                                }
                                (status, _, error) => {
                                    let code = error.map(|e| e.code).unwrap_or_default();
                                    rec.record("item", latency, done, Outcome::Failed(format!("{status} {code}")));
                                    if status >= 500 {
                                        *led.unknown.entry(*wallet_id).or_default() += 1;
                                    }
                                }
                            }
                        }
                    }
                    Err(what) => {
                        for (wallet_id, _) in &plan {
                            rec.count_failure(what.clone());
                            *led.unknown.entry(*wallet_id).or_default() += 1;
                        }
                    }
                }
            }
        }));
    }
    let ticker = {
        let (bar, recorder) = (bar.clone(), recorder.clone());
        bar.set_length(duration.as_secs());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
                let ok = recorder.lock().map(|r| r.ok()).unwrap_or(0);
                bar.set_message(format!("{ok} items applied"));
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    ticker.abort();
    let stats = recorder.lock().expect("recorder").finish(
        batches.load(std::sync::atomic::Ordering::Relaxed) * items as u64,
        None,
        duration,
    );
    let batch_latency = summarize(&batch_hist.lock().expect("histogram"));
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    Ok(BulkRun {
        stats,
        batches: batches.load(std::sync::atomic::Ordering::Relaxed),
        batch_latency,
        ledger,
    })
}
