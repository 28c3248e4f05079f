//! Errors as HTTP replies: [`ApiError::into_response`] adds the status, the media type and the headers
//! (`WWW-Authenticate`, `Retry-After`) to the problem document of [`crate::problem`]. Handlers return
//! `Result<Response, ApiError>`; the router renders the error case here.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde::Serialize;
use warp::reply::Response;

pub use crate::problem::*;

impl ApiError {
    pub fn into_response(self) -> Response {
        let status = self.status.as_u16().to_string();
        metrics::counter!("http_rejections_total", "code" => self.code, "status" => status).increment(1);
        let mut res = Response::new(self.body().into());
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wallet-service\""),
            );
        }
        let default_retry = matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS | StatusCode::GATEWAY_TIMEOUT
        )
        .then_some(RETRY_AFTER_SECS);
        if let Some(secs) = self.retry_after.or(default_retry) {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// A 503 given while a Postgres breaker refuses connections (`breaker_wait`: how long until it tries the
/// server again; asked only of 503s, so other replies take no lock) asks the client to wait that long — at
/// least what the reply asked already, at most [`OPEN_MAX`](crate::resilience::OPEN_MAX) — rather than the
/// default second, which would have clients call again and again into a breaker that refuses them for up
/// to fifteen. Any other reply is left as it is.
pub fn with_breaker_wait(mut res: Response, breaker_wait: impl FnOnce() -> Option<std::time::Duration>) -> Response {
    if res.status() != StatusCode::SERVICE_UNAVAILABLE {
        return res;
    }
    let Some(wait) = breaker_wait() else {
        return res;
    };
    let asked = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(RETRY_AFTER_SECS);
    let secs = (wait.as_millis().div_ceil(1000) as u64)
        .max(asked)
        .clamp(RETRY_AFTER_SECS, crate::resilience::OPEN_MAX.as_secs());
    res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// JSON reply with a status.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_string(value).unwrap_or_default();
    raw_json(status, body)
}

/// A JSON body given as text (replays of idempotent replies must be byte for byte).
pub fn raw_json(status: StatusCode, body: String) -> Response {
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[cfg(test)]
mod tests {
    use wallet_actors::{Rejection, StoreError};

    use super::*;

    #[test]
    fn a_store_error_becomes_503_or_500_with_a_fixed_detail() {
        let cause = "error connecting to server: Connection refused (os error 111)";
        for (e, status, code) in [
            (StoreError::Unreachable(cause.into()), 503, "UNAVAILABLE"),
            (StoreError::Busy(cause.into()), 503, "UNAVAILABLE"),
            (StoreError::Refused(cause.into()), 500, "INTERNAL"),
            (StoreError::Corrupt(cause.into()), 500, "INTERNAL"),
            (StoreError::Other(cause.into()), 500, "INTERNAL"),
        ] {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            let body = api.body();
            assert!(!body.contains("os error") && !body.contains("connecting"), "{body}");
            let res = api.into_response();
            assert_eq!(res.headers().contains_key(RETRY_AFTER), status == 503);
        }
        let api = ApiError::from(Rejection::Unavailable(cause.into()));
        assert_eq!(api.detail, UNAVAILABLE_DETAIL);
    }

    fn retry_after(res: &Response) -> Option<&str> {
        res.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_503_while_a_breaker_is_open_asks_for_the_breakers_wait_rounded_up_and_capped() {
        use std::time::Duration;
        let unavailable = || ApiError::unavailable("down").into_response();
        let waited = |wait: Option<Duration>| with_breaker_wait(unavailable(), || wait);
        assert_eq!(retry_after(&waited(None)), Some("1"), "breaker closed: the default");
        assert_eq!(
            retry_after(&waited(Some(Duration::ZERO))),
            Some("1"),
            "probing now: never 0"
        );
        assert_eq!(retry_after(&waited(Some(Duration::from_millis(3_200)))), Some("4"));
        assert_eq!(
            retry_after(&waited(Some(Duration::from_secs(600)))),
            Some("15"),
            "OPEN_MAX"
        );
        let asked_more = ApiError::unavailable("replica behind").retry_after(9).into_response();
        let res = with_breaker_wait(asked_more, || Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&res), Some("9"), "never less than the reply asked");
        let refused = ApiError::not_found("wallet").into_response();
        let res = with_breaker_wait(refused, || unreachable!("asked only of 503s"));
        assert_eq!(
            (res.status(), retry_after(&res)),
            (StatusCode::NOT_FOUND, None),
            "only 503s"
        );
    }
}
