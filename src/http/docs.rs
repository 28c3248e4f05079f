//! The API documentation the binary serves itself, with no network beyond the service:
//! - `GET /docs`: the OpenAPI reference rendered by Swagger UI (installed from the npm registry through
//!   `web/package-lock.json` by `build.rs` and embedded here), reading `/openapi.json`; a
//!   `Content-Security-Policy` keeps the page to same-origin scripts, styles and requests.
//! - `GET /docs/{asset}`: the viewer's files.
//! - `GET /problems` and `GET /problems/{slug}`: what each problem `code` means, when it happens and what
//!   to do; every problem's `type` URI is one of these pages.

use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use warp::reply::Response;

use super::problem::{ApiError, CATALOGUE, PROBLEM_TYPE_PREFIX, ProblemKind, kind_by_slug};

/// Swagger UI's files, embedded at build time (see `build.rs`).
const VIEWER_JS: &[u8] = include_bytes!(concat!(env!("WALLET_DOCS_VIEWER_DIR"), "/swagger-ui-bundle.js"));
const VIEWER_CSS: &[u8] = include_bytes!(concat!(env!("WALLET_DOCS_VIEWER_DIR"), "/swagger-ui.css"));
/// Our start-up script for the viewer (a file, so the page needs no inline script).
const VIEWER_INIT: &[u8] = include_bytes!("../../web/docs-init.js");

/// The viewer's assets under `/docs/`: name, content type, bytes.
pub const ASSETS: [(&str, &str, &[u8]); 3] = [
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8", VIEWER_JS),
    ("swagger-ui.css", "text/css; charset=utf-8", VIEWER_CSS),
    ("init.js", "text/javascript; charset=utf-8", VIEWER_INIT),
];

/// How long a browser may keep an asset.
pub const ASSET_MAX_AGE_SECS: u32 = 3600;

/// Same origin only: the viewer's script and style, `/openapi.json`, and the inline styles and data-URI
/// images Swagger UI uses. No CDN can be reached from the page even if something asked for one.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                        form-action 'self'; frame-ancestors 'none'";

const PAGE: &str = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>Wallet &amp; Budget Service: API reference</title>\n\
<link rel=\"stylesheet\" href=\"/docs/swagger-ui.css\">\n</head>\n<body>\n\
<noscript><p>The reference needs JavaScript. The document itself: <a href=\"/openapi.json\">/openapi.json</a>; \
the problem codes: <a href=\"/problems\">/problems</a>.</p></noscript>\n\
<div id=\"swagger-ui\"></div>\n\
<script src=\"/docs/swagger-ui-bundle.js\"></script>\n<script src=\"/docs/init.js\"></script>\n</body>\n</html>\n";

fn html(status: StatusCode, body: String, csp: &'static str) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// `GET /docs`.
pub fn page() -> Response {
    html(StatusCode::OK, PAGE.to_string(), DOCS_CSP)
}

/// `GET /docs/{asset}`.
pub fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("document").into_response();
    };
    let mut res = Response::new(bytes.to_vec().into());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={ASSET_MAX_AGE_SECS}")) {
        h.insert(CACHE_CONTROL, v);
    }
    res
}

/// Text of the catalogue as HTML: escaped, with `code` spans.
fn text(s: &str) -> String {
    let escaped = s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

const PROBLEM_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";
const STYLE: &str = "<style>body{font-family:system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em;\
line-height:1.5}code{background:#f3f3f3;padding:0 .2em}dt{font-weight:bold;margin-top:.8em}\
section{border-top:1px solid #ddd;padding-top:.5em}</style>";

fn entry(k: &ProblemKind, heading: &str) -> String {
    let members = if k.members.is_empty() {
        "none beyond <code>type</code>, <code>title</code>, <code>status</code>, <code>detail</code>, \
         <code>code</code>"
            .to_string()
    } else {
        text(k.members)
    };
    format!(
        "<section id=\"{slug}\"><{heading}><code>{code}</code>: {title} ({status})</{heading}><dl>\
         <dt>Type URI</dt><dd><a href=\"{PROBLEM_TYPE_PREFIX}{slug}\"><code>{PROBLEM_TYPE_PREFIX}{slug}</code></a></dd>\
         <dt>When</dt><dd>{when}</dd><dt>What to do</dt><dd>{action}</dd>\
         <dt>Machine-readable members</dt><dd>{members}</dd></dl></section>",
        slug = k.slug(),
        code = k.code,
        title = text(k.title),
        status = k.status,
        when = text(k.when),
        action = text(k.action),
    )
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>{STYLE}</head><body>\
         <p><a href=\"/problems\">All problem codes</a> · <a href=\"/docs\">API reference</a></p>{body}\
         <p>Every error is <code>application/problem+json</code> (RFC 9457): <code>type</code>, <code>title</code>, \
         <code>status</code>, <code>detail</code> and the stable <code>code</code>.</p></body></html>\n"
    )
}

/// `GET /problems`: every code.
pub fn problems() -> Response {
    let body: String = CATALOGUE.iter().map(|k| entry(k, "h2")).collect();
    html(
        StatusCode::OK,
        document(
            "Problem codes: Wallet &amp; Budget Service",
            &format!("<h1>Problem codes</h1>{body}"),
        ),
        PROBLEM_CSP,
    )
}

/// `GET /problems/{slug}`: one code, or a 404 problem.
pub fn problem(slug: &str) -> Response {
    match kind_by_slug(slug) {
        Some(k) => html(
            StatusCode::OK,
            document(&format!("{}: Wallet &amp; Budget Service", k.code), &entry(k, "h1")),
            PROBLEM_CSP,
        ),
        None => ApiError::not_found("problem type").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_page_and_unknown_slugs_do_not() {
        for k in CATALOGUE {
            let res = problem(&k.slug());
            assert_eq!(res.status(), 200, "{}", k.code);
        }
        assert_eq!(problem("no-such-code").status(), 404);
        assert_eq!(asset("nothing.js").status(), 404);
    }

    #[test]
    fn the_catalogue_text_is_escaped() {
        assert_eq!(text("a <b> & `c`"), "a &lt;b&gt; &amp; <code>c</code>");
    }
}
