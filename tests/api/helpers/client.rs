//! A client as a booking service should be one: every money-moving request carries an `Idempotency-Key`
//! and is sent again, with the same key and the same bytes, until it gets a final answer.
//!
//! Retried (not final): no answer at all (connection refused or reset, timeout), 503 (`UNAVAILABLE`: not
//! applied), 504 (`OUTCOME_UNKNOWN`: may have been applied) and 409 `IDEMPOTENCY_IN_PROGRESS`, honouring
//! `Retry-After` (capped at [`MAX_RETRY_AFTER`]); within a bounded total time. Everything else is final.
//! Every attempt is recorded, with when it was answered, for the audit.

use std::time::{Duration, Instant};

/// A client waits at most this long for one answer (longer than any reply timeout of the service).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is shortened to it (the test's clock is precious).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Shortest pause between attempts (a `Retry-After: 0` must not make a busy loop).
pub const MIN_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Pause before retrying an attempt that got no answer, or an answer without `Retry-After`.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Default total time a client keeps retrying one request.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(45);

/// A keyed `POST`: path, the body's exact bytes and its key, the same for every attempt.
#[derive(Clone, Debug)]
pub struct Request {
    pub key: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn post(key: String, path: &str, body: &serde_json::Value) -> Request {
        Request {
            key,
            path: path.to_string(),
            body: serde_json::to_vec(body).expect("JSON body"),
        }
    }
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The problem document's `code`, if the body is one.
    pub code: Option<String>,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `IDEMPOTENCY_IN_PROGRESS`.
    pub fn in_progress(&self) -> bool {
        self.status == 409 && self.code.as_deref() == Some("IDEMPOTENCY_IN_PROGRESS")
    }

    /// Not a final answer: retry with the same key.
    pub fn retryable(&self) -> bool {
        // 502: a proxy in front lost the instance mid-request; the outcome is unknown, the key answers it.
        matches!(self.status, 502..=504) || self.in_progress()
    }

    /// `503/UNAVAILABLE`-style label for tallies.
    pub fn label(&self) -> String {
        match &self.code {
            Some(code) => format!("{}/{code}", self.status),
            None => self.status.to_string(),
        }
    }

    /// The JSON body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One attempt: when it ended, and its answer or why there was none.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Instant,
    pub answer: Result<Reply, String>,
}

/// Everything one keyed request went through.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub request: Request,
    pub started: Instant,
    pub attempts: Vec<Attempt>,
    /// The first 2xx answer, if any.
    pub first_success: Option<Reply>,
    /// The final answer, or `None` if the budget ran out first (unresolved).
    pub final_answer: Option<Reply>,
}

impl Outcome {
    /// The client was told the operation is done.
    pub fn acknowledged(&self) -> bool {
        self.final_answer.as_ref().is_some_and(Reply::is_success)
    }

    pub fn answers(&self) -> impl Iterator<Item = (Instant, &Reply)> {
        self.attempts
            .iter()
            .filter_map(|a| a.answer.as_ref().ok().map(|r| (a.at, r)))
    }

    /// The longest time the key was seen in progress: from the first `IDEMPOTENCY_IN_PROGRESS` of a run
    /// of them to the last one of that run (what the client saw, not when it happened to look again).
    pub fn longest_in_progress(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut run: Option<(Instant, Instant)> = None;
        for a in &self.attempts {
            match &a.answer {
                Ok(r) if r.in_progress() => {
                    let (first, _) = run.unwrap_or((a.at, a.at));
                    run = Some((first, a.at));
                    longest = longest.max(a.at - first);
                }
                // No answer says nothing about the key; any other answer ends the run.
                Err(_) => {}
                Ok(_) => run = None,
            }
        }
        longest
    }

    /// Answers that ask for a retry (502, 503, 504, 409 in progress) but carry no `Retry-After`.
    pub fn retry_answers_without_retry_after(&self) -> usize {
        self.answers()
            .filter(|(_, r)| r.retryable() && r.retry_after.is_none())
            .count()
    }
}

pub struct RetryingClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    budget: Duration,
}

impl RetryingClient {
    pub fn new(base_url: &str, token: &str) -> RetryingClient {
        RetryingClient {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("http client"),
            base_url: base_url.to_string(),
            token: token.to_string(),
            budget: DEFAULT_BUDGET,
        }
    }

    /// Total time one request is retried before it counts as unresolved.
    pub fn with_budget(mut self, budget: Duration) -> RetryingClient {
        self.budget = budget;
        self
    }

    /// One attempt.
    pub async fn send_once(&self, req: &Request) -> Result<Reply, String> {
        let res = self
            .http
            .post(format!("{}{}", self.base_url, req.path))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", &req.key)
            .header("Content-Type", "application/json")
            .body(req.body.clone())
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = res.text().await.map_err(|e| format!("body cut off: {e}"))?;
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(String::from));
        Ok(Reply {
            status,
            body,
            code,
            retry_after,
        })
    }

    /// Sends `req` until a final answer or until the budget is spent.
    pub async fn until_final(&self, req: Request) -> Outcome {
        let started = Instant::now();
        let mut outcome = Outcome {
            request: req,
            started,
            attempts: vec![],
            first_success: None,
            final_answer: None,
        };
        loop {
            let answer = self.send_once(&outcome.request).await;
            outcome.attempts.push(Attempt {
                at: Instant::now(),
                answer: answer.clone(),
            });
            let pause = match answer {
                Ok(r) if !r.retryable() => {
                    if r.is_success() && outcome.first_success.is_none() {
                        outcome.first_success = Some(r.clone());
                    }
                    outcome.final_answer = Some(r);
                    return outcome;
                }
                Ok(r) => r
                    .retry_after
                    .as_deref()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).clamp(MIN_RETRY_PAUSE, MAX_RETRY_AFTER))
                    .unwrap_or(RETRY_PAUSE),
                Err(_) => RETRY_PAUSE,
            };
            if started.elapsed() + pause > self.budget {
                return outcome;
            }
            tokio::time::sleep(pause).await;
        }
    }
}
