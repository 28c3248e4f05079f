//! The managers' dashboard (`GET /dashboard`, issue 14) in Debian's headless Chromium, driven by
//! `tests/browser/dashboard.mjs` (playwright-core): a company seeded through the API, the page loaded, the
//! token entered, what the page shows compared with what the API answers, the period switched, the CSV
//! downloaded, screenshots saved under `target/dashboard/`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;
use wallet_service::auth::{Caller, Role, mint_hs256};

use crate::helpers::app::{TestApp, spawn_app};
use crate::helpers::fixtures::{AUDIENCE, ISSUER, budget_body, token};
use crate::helpers::paths::target_dir;
use crate::helpers::replies::json_of;

/// Debian's Chromium, which scripts/test.sh installs with apt-get when it is missing.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The script bounds itself at 90 s; this is the backstop should Node itself hang.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// The thresholds the page marks when the report does not name its own (the contract's defaults).
const DEFAULT_THRESHOLDS: [&str; 2] = ["80", "100"];
/// The refused token is refused for its signature, not for having expired.
const REFUSED_TTL: Duration = Duration::from_secs(3600);

fn dec(v: &Value) -> Decimal {
    let s = v.as_str().unwrap_or_else(|| panic!("a decimal string, not {v}"));
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn id(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap_or_else(|| panic!("an id, not {v}"))).expect("uuid")
}

/// A user of `company` with a wallet of 1,000.00 USD; (user, wallet).
async fn traveller(app: &TestApp, company: Uuid) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    assert_eq!(app.put_user(user, company, "user").await.status(), 200);
    let (status, w) = json_of(
        app.create_wallet_as(
            &app.admin_token,
            json!({"user_id": user, "initial_balance": "1000.00", "currency": "USD"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{w}");
    (user, id(&w["wallet_id"]))
}

async fn post(app: &TestApp, wallet: Uuid, body: Value) -> Value {
    let (status, b) = json_of(app.post_txn(wallet, body).await).await;
    assert_eq!(status, 201, "{b}");
    b
}

async fn send(req: reqwest::RequestBuilder, status: u16) -> Value {
    let (got, b) = json_of(req.send().await.expect("request")).await;
    assert_eq!(got, status, "{b}");
    b
}

/// Who signs in to the page: the company's manager, an admin who types the company, and a manager's
/// token signed with another key (refused).
struct Tokens {
    manager: String,
    admin: String,
    company: Uuid,
    refused: String,
}

/// Runs the browser script against the app with these tokens; its JSON, or a failure with its stderr.
fn run_browser(base_url: &str, tokens: &Tokens, out: &Path) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules is missing: scripts/test.sh installs it (npm ci in tests/browser)",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&dir)
        .env("DASHBOARD_URL", base_url)
        .env("DASHBOARD_TOKEN", &tokens.manager)
        .env("DASHBOARD_ADMIN_TOKEN", &tokens.admin)
        .env("DASHBOARD_COMPANY", tokens.company.to_string())
        .env("DASHBOARD_REFUSED_TOKEN", &tokens.refused)
        .env("DASHBOARD_OUT", out)
        .env("CHROMIUM_PATH", CHROMIUM)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/test.sh installs nodejs)");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser script did not end within {SCRIPT_LIMIT:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success(),
        "the browser script failed ({status}); stderr:\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script's output is not JSON ({e}): {stdout}\n{stderr}"))
}

/// The CSV's blocks by title: each a header and its rows (fields split on commas; the figures compared
/// here hold none).
fn csv_blocks(csv: &str) -> HashMap<String, Vec<Vec<String>>> {
    let mut out = HashMap::new();
    for block in csv.split("\r\n\r\n") {
        let mut lines = block.lines().filter(|l| !l.is_empty());
        let Some(title) = lines.next() else { continue };
        let rows = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
        out.insert(title.trim_matches('"').to_string(), rows);
    }
    out
}

/// The rows of a CSV block as maps from its header's names.
fn records(block: &[Vec<String>]) -> Vec<HashMap<String, String>> {
    let (header, rows) = block.split_first().expect("a header row");
    rows.iter()
        .map(|r| header.iter().cloned().zip(r.iter().cloned()).collect())
        .collect()
}

fn block<'a>(blocks: &'a HashMap<String, Vec<Vec<String>>>, prefix: &str) -> &'a [Vec<String>] {
    blocks
        .iter()
        .find(|(t, _)| t.starts_with(prefix))
        .map(|(_, b)| b.as_slice())
        .unwrap_or_else(|| panic!("no \"{prefix}\" block in the CSV: {:?}", blocks.keys()))
}

/// The chart's series of one currency from the page: key → spent.
fn series_of(spend: &Value, currency: &str) -> Vec<(String, Decimal)> {
    let keys: Vec<String> = spend["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_string())
        .collect();
    let series = spend["series"]
        .as_array()
        .expect("series")
        .iter()
        .find(|s| s["currency"] == currency)
        .unwrap_or_else(|| panic!("no {currency} series in {spend}"));
    keys.into_iter()
        .zip(series["values"].as_array().expect("values").iter().map(dec))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_and_its_assets_are_served_by_the_binary_with_a_same_origin_policy() {
    let app = spawn_app().await;
    let res = app.get("/dashboard").await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    for (asset, kind) in [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("chart.umd.min.js", "text/javascript"),
    ] {
        assert!(html.contains(&format!("/dashboard/{asset}")), "the page loads {asset}");
        let res = app.get(&format!("/dashboard/{asset}")).await;
        assert_eq!(res.status(), 200, "{asset}");
        assert!(
            res.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{asset}"
        );
        assert!(
            res.headers()["cache-control"].to_str().unwrap().contains("max-age"),
            "{asset}"
        );
        assert!(!res.bytes().await.unwrap().is_empty(), "{asset}");
    }
    let res = app.get("/dashboard/../Cargo.toml").await;
    assert_eq!(res.status(), 404);
    let res = app.get("/dashboard/secrets.js").await;
    assert_eq!(res.status(), 404);
    let api: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(api["paths"]["/dashboard"]["get"].is_object(), "listed beside /docs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_sees_on_the_dashboard_the_budgets_spend_and_frozen_wallets_the_api_reports_and_downloads_them() {
    let app = spawn_app().await;
    let company = Uuid::new_v4();
    let manager = Uuid::new_v4();
    assert_eq!(app.put_user(manager, company, "manager").await.status(), 200);
    let (user_a, wallet_a) = traveller(&app, company).await;
    let (user_b, wallet_b) = traveller(&app, company).await;
    let (user_c, wallet_c) = traveller(&app, company).await;
    // Someone else's company: nothing of it may appear.
    let (_, _, stranger) = app.user_with_wallet("1000.00", "USD").await;

    for wallet in [wallet_a, wallet_b, stranger] {
        let req = app
            .http
            .post(app.url("/budgets"))
            .bearer_auth(&app.admin_token)
            .json(&budget_body(wallet, "500.00"));
        send(req, 201).await;
    }
    // A spends 120 and holds 30; B spends 80 and is refunded 20 of it; C spends 10 and is frozen.
    post(
        &app,
        wallet_a,
        json!({"amount": "120.00", "type": "DEBIT", "description": "Flight LHR-JFK"}),
    )
    .await;
    let req = app
        .http
        .post(app.url(&format!("/wallets/{wallet_a}/holds")))
        .bearer_auth(&app.service_token)
        .json(&json!({"amount": "30.00", "description": "Hotel pre-authorisation"}));
    send(req, 201).await;
    let booking = json!({"reference_id": "BK-2", "reference_type": "BOOKING"});
    let mut debit = json!({"amount": "80.00", "type": "DEBIT", "description": "Train"});
    let mut refund = json!({"amount": "20.00", "type": "CREDIT", "description": "Train refund"});
    for body in [&mut debit, &mut refund] {
        body.as_object_mut()
            .unwrap()
            .extend(booking.as_object().unwrap().clone());
    }
    post(&app, wallet_b, debit).await;
    post(&app, wallet_b, refund).await;
    post(
        &app,
        wallet_c,
        json!({"amount": "10.00", "type": "DEBIT", "description": "Taxi"}),
    )
    .await;
    let req = app
        .http
        .put(app.url(&format!("/wallets/{wallet_c}/status")))
        .bearer_auth(&app.admin_token)
        .json(&json!({"status": "FROZEN", "reason": "lost card"}));
    send(req, 200).await;
    post(
        &app,
        wallet_a,
        json!({"amount": "5.00", "type": "CREDIT", "description": "Per diem top-up"}),
    )
    .await;

    // What the API says, as the manager (asked after the page, below).
    let as_manager = token(Role::Manager, manager, company);
    let get = |path: String| {
        let app = &app;
        let t = as_manager.clone();
        async move {
            let (status, b) = json_of(app.get_as(&t, &path).await).await;
            assert_eq!(status, 200, "{path}: {b}");
            b
        }
    };

    let out: PathBuf = target_dir().join("dashboard");
    std::fs::create_dir_all(&out).expect("target/dashboard");
    let caller = Caller {
        user_id: manager,
        role: Role::Manager,
        company_id: company,
    };
    let tokens = Tokens {
        manager: as_manager.clone(),
        admin: app.admin_token.clone(),
        company,
        refused: mint_hs256(
            b"not-the-service-secret-0123456789abcdef",
            ISSUER,
            AUDIENCE,
            &caller,
            REFUSED_TTL,
        ),
    };
    let (base, dir) = (app.address.clone(), out.clone());
    let seen = tokio::task::spawn_blocking(move || run_browser(&base, &tokens, &dir))
        .await
        .expect("the browser run");
    // Nothing moved since the seeding: the API's answers now are what the page was given.
    let budgets = get(format!("/reports/budgets?company_id={company}")).await;
    let latest = get(format!("/reports/transactions?company_id={company}&limit=1")).await;
    let frozen = get(format!("/reports/wallets?company_id={company}&status=FROZEN,CLOSED")).await;

    // The page itself: no script errors, nothing fetched from elsewhere, the token never in the URL.
    assert_eq!(seen["problems"], json!([]), "console or page errors");
    assert_eq!(seen["off_origin_requests"], json!([]), "requests beyond the service");
    assert!(seen["csp"].as_str().is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(seen["token_in_storage"], true, "the token is kept in sessionStorage");
    let url = seen["url_after_login"].as_str().unwrap();
    assert!(!url.contains(&as_manager) && !url.contains('?'), "{url}");
    let first = &seen["first"];
    assert_eq!(first["error"], Value::Null, "{first}");
    assert_eq!(first["section_errors"], json!([]), "{first}");
    assert!(first["company_label"].as_str().unwrap().contains(&company.to_string()));
    assert_eq!(first["chart_drawn"], true);

    // The bars: exactly the API's figures, spent = used − held, the thresholds marked.
    let rows = budgets["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{budgets}");
    let thresholds: Vec<String> = match budgets["alert_thresholds"].as_array() {
        Some(t) => t.iter().map(|v| v.to_string()).collect(),
        None => DEFAULT_THRESHOLDS.iter().map(|s| s.to_string()).collect(),
    };
    let bars = first["budgets"].as_array().unwrap();
    assert_eq!(bars.len(), rows.len(), "{bars:?}");
    for row in rows {
        let bar = bars
            .iter()
            .find(|b| b["budgetId"] == row["budget_id"])
            .unwrap_or_else(|| panic!("no bar for {row}"));
        assert_eq!(dec(&bar["total"]), dec(&row["total_amount"]), "{bar}");
        assert_eq!(dec(&bar["used"]), dec(&row["used_amount"]), "{bar}");
        assert_eq!(dec(&bar["held"]), dec(&row["held_amount"]), "{bar}");
        assert_eq!(
            dec(&bar["spent"]),
            dec(&row["used_amount"]) - dec(&row["held_amount"]),
            "{bar}"
        );
        assert_eq!(bar["userId"], row["user_id"]);
        let marks: Vec<String> = bar["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(marks, thresholds, "{bar}");
    }
    let bar_a = bars.iter().find(|b| b["walletId"] == wallet_a.to_string()).unwrap();
    assert_eq!(
        (dec(&bar_a["spent"]), dec(&bar_a["held"]), dec(&bar_a["total"])),
        (Decimal::new(12000, 2), Decimal::new(3000, 2), Decimal::new(50000, 2)),
        "A's bar: 120 spent, 30 held, of 500"
    );

    // The latest transaction and the frozen wallet are on screen.
    let newest = &latest["rows"][0];
    assert_eq!(first["transactions"][0]["txnId"], newest["txn_id"], "{first}");
    assert_eq!(first["transactions"][0]["amount"], "5.00");
    let refund_row = first["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["amount"] == "20.00" && t["walletId"] == wallet_b.to_string())
        .unwrap_or_else(|| panic!("B's refund is not shown: {first}"));
    assert_eq!(
        (&refund_row["type"], &refund_row["shownAs"]),
        (&json!("CREDIT"), &json!("REFUND")),
        "a credit with a debit's reference is shown as a refund"
    );
    let wallets = first["wallets"].as_array().unwrap();
    assert_eq!(wallets.len(), frozen["rows"].as_array().unwrap().len());
    let shown = wallets
        .iter()
        .find(|w| w["walletId"] == wallet_c.to_string())
        .unwrap_or_else(|| panic!("the frozen wallet is not shown: {wallets:?}"));
    assert_eq!(shown["status"], "FROZEN");
    assert_eq!(dec(&shown["balance"]), Decimal::new(99000, 2));
    assert!(
        !seen.to_string().contains(&stranger.to_string()),
        "another company's wallet"
    );

    // The period switch changed the chart's series: other keys, the same money.
    let (week, month) = (&first["spend"], &seen["second"]["spend"]);
    assert_eq!(week["group_by"], "week");
    assert_eq!(month["group_by"], seen["switched_to"]);
    assert_ne!(week["keys"], month["keys"], "the chart's periods changed");
    let total = |s: &Value| series_of(s, "USD").iter().map(|(_, v)| *v).sum::<Decimal>();
    assert_eq!(total(week), Decimal::new(19000, 2), "120 + (80 − 20) + 10");
    assert_eq!(total(month), Decimal::new(19000, 2));

    // The CSV holds what was on screen after the switch.
    let csv = seen["csv"].as_str().unwrap();
    let blocks = csv_blocks(csv);
    let head = records(block(&blocks, "Company"));
    let (from, to) = (&head[0]["spend_from"], &head[0]["spend_to"]);
    assert_eq!(head[0]["group_by"], month["group_by"].as_str().unwrap());
    let api_month = get(format!(
        "/reports/spend?company_id={company}&from={from}&to={to}&group_by={}",
        head[0]["group_by"]
    ))
    .await;
    let on_chart: HashMap<String, Decimal> = series_of(month, "USD").into_iter().collect();
    for row in api_month["rows"].as_array().unwrap() {
        let key = row["key"].as_str().unwrap();
        assert_eq!(
            on_chart.get(key).copied(),
            Some(dec(&row["debits"]) - dec(&row["refunds"])),
            "{key}: {row}"
        );
    }
    let spend_csv = records(block(&blocks, "Spend per"));
    assert_eq!(spend_csv.len(), on_chart.len(), "{csv}");
    for r in &spend_csv {
        assert_eq!(
            Some(Decimal::from_str(&r["spent"]).unwrap()),
            on_chart.get(&r["period"]).copied(),
            "{r:?}"
        );
    }
    let budgets_csv = records(block(&blocks, "Budgets"));
    let bars_after = seen["second"]["budgets"].as_array().unwrap();
    assert_eq!(budgets_csv.len(), bars_after.len());
    for bar in bars_after {
        let r = budgets_csv
            .iter()
            .find(|r| r["budget_id"] == bar["budgetId"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{bar} not in the CSV:\n{csv}"));
        for (col, attr) in [
            ("total_amount", "total"),
            ("spent_amount", "spent"),
            ("held_amount", "held"),
        ] {
            assert_eq!(r[col], bar[attr].as_str().unwrap(), "{col}");
        }
    }
    let txns_csv = records(block(&blocks, "Latest transactions"));
    let txns_after = seen["second"]["transactions"].as_array().unwrap();
    assert_eq!(txns_csv.len(), txns_after.len());
    assert_eq!(txns_csv[0]["txn_id"], newest["txn_id"].as_str().unwrap());
    let wallets_csv = records(block(&blocks, "Frozen and closed wallets"));
    assert!(
        wallets_csv
            .iter()
            .any(|r| r["wallet_id"] == wallet_c.to_string() && r["status"] == "FROZEN"),
        "{csv}"
    );
    let spenders_csv = records(block(&blocks, "Top spenders"));
    let order: Vec<&str> = spenders_csv.iter().map(|r| r["user_id"].as_str()).collect();
    let (a, b, c) = (user_a.to_string(), user_b.to_string(), user_c.to_string());
    assert_eq!(order, [a.as_str(), b.as_str(), c.as_str()], "by debits − refunds");
    let spenders_shown: Vec<&str> = seen["second"]["spenders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userId"].as_str().unwrap())
        .collect();
    assert_eq!(spenders_shown, order, "the CSV's spenders are the screen's");
    assert_eq!(spenders_csv[1]["spent"], "60.00");

    // An admin is asked for the company in words, types it, and sees the same bars.
    let admin = &seen["admin"];
    assert!(admin["prompt"].as_str().unwrap().contains("company"), "{admin}");
    assert_eq!(admin["board"]["error"], Value::Null, "{admin}");
    let admin_bars: Vec<&Value> = admin["board"]["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["budgetId"])
        .collect();
    let manager_bars: Vec<&Value> = bars.iter().map(|b| &b["budgetId"]).collect();
    assert_eq!(admin_bars, manager_bars);
    // A token the service refuses: said in words, back to sign-in, not kept.
    let refused = &seen["refused"];
    assert!(
        refused["error"].as_str().unwrap().contains("token was refused"),
        "{refused}"
    );
    assert_eq!(
        (refused["board_hidden"].clone(), refused["token_kept"].clone()),
        (json!(true), json!(false))
    );

    // The screenshots are there, and the phone-width page does not scroll sideways.
    for name in seen["screenshots"].as_array().unwrap() {
        let path = out.join(name.as_str().unwrap());
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{}", path.display());
    }
    let phone = &seen["phone"];
    assert!(
        phone["scroll_width"].as_u64() <= phone["client_width"].as_u64(),
        "sideways scrolling at phone width: {phone}"
    );
}
