//! Scaling out, for real on one machine (issue 15): several `wallet-service` processes behind a real
//! HAProxy, and a private primary with a streaming replica.
//!
//! | test | what |
//! |---|---|
//! | [`three_instances`] | three processes over one database and one vhost behind HAProxy (consistent hash on the wallet segment): HTTP load and booking events; one process SIGKILLed and restarted in the second test |
//! | [`sharded_bookings`] | `BOOKING_SHARDS`: hot-wallet bookings through the consistent-hash exchange over three instances, applied once with no version conflict; bookings without the header still through the shared queue |
//! | [`replica`] | `DATABASE_READ_URL` on a `pg_basebackup -R` replica: history and reports read there, read-your-writes, the replica stopped |

use std::time::Duration;

mod replica;
mod sharded_bookings;
mod three_instances;

/// The sum of a counter (every label set) in a process's `/metrics`; 0 when it is absent.
pub async fn counter(base_url: &str, name: &str) -> f64 {
    let text = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    sum_of(&text, name, None)
}

/// The sum of `name`'s samples in a Prometheus text, only those whose labels contain `label` when given.
pub fn sum_of(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && label.is_none_or(|want| labels.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
