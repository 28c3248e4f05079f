//! The manager dashboard, served by the binary itself with no network beyond the service:
//! - `GET /dashboard`: one HTML page (no token needed to load it). Its script asks for a token, keeps it in
//!   `sessionStorage` (never in a URL) and calls the report endpoints with it (`/reports/budgets`,
//!   `/reports/spend`, `/reports/transactions`, `/reports/wallets`): budgets as bars, spend over time,
//!   top spenders, the latest transactions, frozen and closed wallets, a CSV of what is on screen.
//! - `GET /dashboard/{asset}`: the page's script and style (ours, `web/dashboard/`) and the charting
//!   library (Chart.js's prebuilt UMD file, installed from the npm registry through `web/package-lock.json`
//!   by `build.rs`).
//!
//! A thin adapter: no data passes through here, only files. The `Content-Security-Policy` allows scripts,
//! styles and requests to this origin only, so the page can reach nothing else even if something asked.

use http::StatusCode;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use warp::reply::Response;

use super::problem::ApiError;

/// The page. Its script and style are files of their own: the policy below allows no inline code.
const PAGE: &[u8] = include_bytes!("../../web/dashboard/index.html");
const SCRIPT: &[u8] = include_bytes!("../../web/dashboard/dashboard.js");
const STYLE: &[u8] = include_bytes!("../../web/dashboard/dashboard.css");
/// Chart.js, embedded at build time (see `build.rs`).
const CHART: &[u8] = include_bytes!(concat!(env!("WALLET_DASHBOARD_CHART_DIR"), "/chart.umd.min.js"));

/// The page's assets under `/dashboard/`: name, content type, bytes.
pub const ASSETS: [(&str, &str, &[u8]); 3] = [
    ("dashboard.js", "text/javascript; charset=utf-8", SCRIPT),
    ("dashboard.css", "text/css; charset=utf-8", STYLE),
    ("chart.umd.min.js", "text/javascript; charset=utf-8", CHART),
];

/// How long a browser may keep an asset. Short, because the page's own script changes with the binary
/// and its name carries no version.
pub const ASSET_MAX_AGE_SECS: u32 = 300;

/// Same origin only. `img-src data:` because Chart.js may hand the canvas back as a data URI; no
/// `'unsafe-inline'` anywhere (Chart.js 4 styles the canvas through the CSSOM, which the policy allows).
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                                 connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_headers(mut res: Response, content_type: &'static str, cache: &str) -> Response {
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The page's URL carries nothing secret, but no other site needs to learn it was open.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(CACHE_CONTROL, v);
    }
    res
}

/// `GET /dashboard`. `no-cache`: the page names its assets, which change with the binary.
pub fn page() -> Response {
    let mut res = with_headers(Response::new(PAGE.into()), "text/html; charset=utf-8", "no-cache");
    *res.status_mut() = StatusCode::OK;
    res.headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    res
}

/// `GET /dashboard/{asset}`.
pub fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("document").into_response();
    };
    with_headers(
        Response::new((*bytes).into()),
        content_type,
        &format!("public, max-age={ASSET_MAX_AGE_SECS}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_assets_the_binary_serves() {
        let page = std::str::from_utf8(PAGE).expect("the page is UTF-8");
        for (name, _, _) in ASSETS {
            assert!(
                page.contains(&format!("/dashboard/{name}")),
                "{name} not used by the page"
            );
        }
        assert!(
            !page.contains("<script>"),
            "no inline script: the policy would block it"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no other origin"
        );
        assert_eq!(asset("nothing.js").status(), 404);
        assert_eq!(asset("dashboard.js").status(), 200);
    }
}
