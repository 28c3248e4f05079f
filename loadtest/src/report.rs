//! A run's result: `result.json` (everything measured) and `report.html` (self-contained, with
//! hand-written SVG plots of throughput and latency over time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::books::BooksReport;
use crate::pgbench::PgbenchRun;
use crate::stats::{RunStats, Summary};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_kb: u64,
    pub kernel: String,
    /// 1-minute load average when the run started (other work on the machine skews the numbers).
    pub loadavg_at_start: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let mem_total_kb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_kb,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One load run against the service.
#[derive(Debug, Clone, Serialize)]
pub struct EngineRun {
    pub name: String,
    /// "open 1000/s" or "closed 64 clients".
    pub mode: String,
    pub wallets: usize,
    pub stats: RunStats,
    pub books: Option<BooksReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub engine_ok_per_s: f64,
    pub pgbench_tps: f64,
    pub ratio: f64,
    pub engine_p99_ms: f64,
    pub pgbench_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceInfo {
    pub pid: Option<u32>,
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// Selected lines of `/metrics` after the run (engine gauges, group-commit sizes, commit latency).
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetupInfo {
    pub wallets: usize,
    pub via: String,
    pub seconds: f64,
    pub initial_balance: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub started_at: String,
    pub command_line: String,
    pub machine: Machine,
    pub target: String,
    pub setup: Option<SetupInfo>,
    pub engine_runs: Vec<EngineRun>,
    pub pgbench_runs: Vec<PgbenchRun>,
    pub comparisons: Vec<Comparison>,
    /// `http-holds`: the pairs against `http-debits` of the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<crate::holds::HoldsVsDebits>,
    pub service: Option<ServiceInfo>,
    pub notes: Vec<String>,
    /// False when any books check failed.
    pub passed: bool,
}

/// Writes `result.json` and `report.html` into `dir` (created if needed); returns their paths.
pub fn write(result: &RunResult, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("result.json");
    std::fs::write(&json, serde_json::to_string_pretty(result)?)?;
    let html = dir.join("report.html");
    std::fs::write(&html, render_html(result))?;
    Ok((json, html))
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn summary_row(label: &str, s: &Summary) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
        esc(label),
        s.count,
        s.p50_ms,
        s.p90_ms,
        s.p99_ms,
        s.p999_ms,
        s.max_ms,
        s.mean_ms
    )
}

const SUMMARY_HEAD: &str = "<tr><th></th><th>count</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>mean ms</th></tr>";

fn books_html(b: &BooksReport) -> String {
    let mut s = format!(
        "<p class=\"{}\">books: {} — {} wallets, {} rows, {} × 201, {} unknown outcomes ({} rows from them), {} lost, {} doubled, {} balance mismatches</p>",
        if b.ok { "ok" } else { "bad" },
        if b.ok { "balanced" } else { "DO NOT BALANCE" },
        b.wallets_checked,
        b.rows_in_db,
        b.acked_201,
        b.unknown_outcomes,
        b.rows_from_unknown_outcomes,
        b.lost,
        b.doubled,
        b.balance_mismatches
    );
    if !b.violations.is_empty() {
        s.push_str("<ul>");
        for v in &b.violations {
            let _ = write!(s, "<li>{}</li>", esc(v));
        }
        s.push_str("</ul>");
    }
    s
}

pub fn render_html(r: &RunResult) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest {}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.ok{{color:#176f2c;font-weight:bold}}.bad{{color:#b00020;font-weight:bold}}\
         code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>",
        esc(&r.scenario)
    );
    let _ = write!(
        h,
        "<h1>loadtest {}</h1><p class=\"{}\">{}</p><table>\
         <tr><td>started</td><td>{}</td></tr><tr><td>command</td><td><code>{}</code></td></tr>\
         <tr><td>target</td><td>{}</td></tr><tr><td>machine</td><td>{} × {} · {} MiB · Linux {} · load at start {}</td></tr>",
        esc(&r.scenario),
        if r.passed { "ok" } else { "bad" },
        if r.passed {
            "PASSED (books balance)"
        } else {
            "FAILED: the books do not balance"
        },
        esc(&r.started_at),
        esc(&r.command_line),
        esc(&r.target),
        r.machine.cpus,
        esc(&r.machine.cpu_model),
        r.machine.mem_total_kb / 1024,
        esc(&r.machine.kernel),
        esc(&r.machine.loadavg_at_start)
    );
    if let Some(s) = &r.setup {
        let _ = write!(
            h,
            "<tr><td>setup</td><td>{} wallets via {} in {:.1} s, initial balance {}</td></tr>",
            s.wallets,
            esc(&s.via),
            s.seconds,
            esc(&s.initial_balance)
        );
    }
    h.push_str("</table>");
    for n in &r.notes {
        let _ = write!(h, "<p>{}</p>", esc(n));
    }
    if !r.comparisons.is_empty() {
        h.push_str("<h2>Engine vs raw SQL</h2><table><tr><th></th><th>engine ok/s</th><th>pgbench tps</th><th>ratio</th><th>engine p99 ms</th><th>pgbench p99 ms</th></tr>");
        for c in &r.comparisons {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td><b>{:.2}×</b></td><td>{:.2}</td><td>{:.2}</td></tr>",
                esc(&c.name),
                c.engine_ok_per_s,
                c.pgbench_tps,
                c.ratio,
                c.engine_p99_ms,
                c.pgbench_p99_ms
            );
        }
        h.push_str("</table>");
    }
    if let Some(holds) = &r.holds {
        h.push_str(&crate::holds::html(holds));
    }
    for run in &r.engine_runs {
        let s = &run.stats;
        let _ = write!(
            h,
            "<h2>{} — {} over {} wallet(s)</h2><p>sent {} · completed {} · ok {} · failed {} · {} · \
             <b>{:.0} ok/s</b> ({:.0} completed/s) over {:.1} s</p>",
            esc(&run.name),
            esc(&run.mode),
            run.wallets,
            s.sent,
            s.completed,
            s.ok,
            s.failed,
            s.offered_rate
                .map_or("closed loop".to_string(), |r| format!("offered {r:.0}/s")),
            s.achieved_ok_per_s,
            s.achieved_completed_per_s,
            s.elapsed_s
        );
        h.push_str("<table>");
        h.push_str(SUMMARY_HEAD);
        h.push_str(&summary_row("all", &s.latency));
        for (k, v) in &s.by_kind {
            h.push_str(&summary_row(&format!("{k} ({} ok)", v.ok), &v.latency));
        }
        h.push_str("</table>");
        if !s.outcomes.is_empty() {
            h.push_str("<table><tr><th>failure</th><th>count</th></tr>");
            for (k, v) in &s.outcomes {
                let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
            }
            h.push_str("</table>");
        }
        if let Some(b) = &run.books {
            h.push_str(&books_html(b));
        }
        let ok: Vec<(f64, f64)> = s.timeline.iter().map(|p| (p.t_s as f64, p.ok as f64)).collect();
        let failed: Vec<(f64, f64)> = s.timeline.iter().map(|p| (p.t_s as f64, p.failed as f64)).collect();
        let mut series = vec![
            Series {
                name: "ok/s",
                color: "#1f77b4",
                points: ok,
            },
            Series {
                name: "failed/s",
                color: "#d62728",
                points: failed,
            },
        ];
        if let Some(rate) = s.offered_rate {
            let end = s.timeline.len().max(1) as f64;
            series.push(Series {
                name: "offered/s",
                color: "#999999",
                points: vec![(0.0, rate), (end, rate)],
            });
        }
        h.push_str(&line_chart(
            "Throughput (per second of completion)",
            "requests/s",
            &series,
            false,
        ));
        let lat = |f: fn(&crate::stats::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
            s.timeline
                .iter()
                .filter(|p| p.ok + p.failed > 0)
                .map(|p| (p.t_s as f64, f(p)))
                .collect()
        };
        h.push_str(&line_chart(
            "Latency over time",
            "ms (log)",
            &[
                Series {
                    name: "p50",
                    color: "#2ca02c",
                    points: lat(|p| p.p50_ms),
                },
                Series {
                    name: "p99",
                    color: "#ff7f0e",
                    points: lat(|p| p.p99_ms),
                },
                Series {
                    name: "max",
                    color: "#d62728",
                    points: lat(|p| p.max_ms),
                },
            ],
            true,
        ));
    }
    for p in &r.pgbench_runs {
        let _ = write!(
            h,
            "<h2>pgbench baseline: {}</h2><p>{} wallet(s), {} clients, {} threads, {:.0} s · {} transactions ({} failed) · <b>{:.0} tps</b></p><p><code>{}</code></p><table>{}{}</table>",
            esc(&p.name),
            p.wallets,
            p.clients,
            p.threads,
            p.duration_s,
            p.transactions,
            p.failed,
            p.tps,
            esc(&p.command),
            SUMMARY_HEAD,
            summary_row("debit", &p.latency)
        );
        h.push_str(&books_html(&p.books));
        h.push_str(&line_chart(
            "pgbench throughput",
            "tps",
            &[Series {
                name: "tps",
                color: "#9467bd",
                points: p.timeline.clone(),
            }],
            false,
        ));
    }
    if let Some(svc) = &r.service {
        h.push_str("<h2>Service</h2><table>");
        if let Some(pid) = svc.pid {
            let _ = write!(h, "<tr><td>pid</td><td>{pid}</td></tr>");
        }
        if let Some(rss) = svc.rss_kb {
            let _ = write!(h, "<tr><td>RSS after the run</td><td>{} MiB</td></tr>", rss / 1024);
        }
        if let Some(rss) = svc.peak_rss_kb {
            let _ = write!(h, "<tr><td>peak RSS</td><td>{} MiB</td></tr>", rss / 1024);
        }
        h.push_str("</table>");
        if !svc.metrics.is_empty() {
            let _ = write!(h, "<pre>{}</pre>", esc(&svc.metrics.join("\n")));
        }
    }
    h.push_str("</body></html>\n");
    h
}

pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Rounds up to 1, 2 or 5 × 10^k.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A line chart as inline SVG. With `log_y`, the y axis spans whole decades (values ≤ 0 are dropped).
pub fn line_chart(title: &str, y_label: &str, series: &[Series], log_y: bool) -> String {
    const W: f64 = 900.0;
    const H: f64 = 280.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 30.0;
    const B: f64 = 40.0;
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| !log_y || p.1 > 0.0);
    let (mut x_max, mut y_max, mut y_min) = (1.0f64, 0.0f64, f64::INFINITY);
    for &(x, y) in pts {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
        y_min = y_min.min(y);
    }
    let (lo, hi) = if log_y {
        let lo = if y_min.is_finite() {
            10f64.powf(y_min.log10().floor())
        } else {
            0.1
        };
        let hi = 10f64.powf(y_max.max(lo * 10.0).log10().ceil());
        (lo, hi)
    } else {
        (0.0, nice_ceiling(y_max * 1.05))
    };
    let x = |v: f64| L + (v / x_max) * (W - L - R);
    let y = |v: f64| {
        let f = if log_y {
            (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            (v - lo) / (hi - lo)
        };
        H - B - f * (H - T - B)
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-size=\"12\" font-family=\"sans-serif\">\
         <text x=\"{L}\" y=\"18\" font-weight=\"bold\">{}</text>\
         <line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" stroke=\"#333\"/>",
        esc(title),
        H - B,
        W - R,
        H - B,
        H - B
    );
    // y ticks
    let ticks: Vec<f64> = if log_y {
        let mut v = Vec::new();
        let mut t = lo;
        while t <= hi * 1.0001 {
            v.push(t);
            t *= 10.0;
        }
        v
    } else {
        (0..=5).map(|i| hi * i as f64 / 5.0).collect()
    };
    for t in ticks {
        let yy = y(t);
        let _ = write!(
            s,
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - R,
            L - 6.0,
            yy + 4.0,
            fmt_tick(t)
        );
    }
    // x ticks: about 10
    let step = nice_ceiling(x_max / 10.0).max(1.0);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(t),
            H - B + 16.0,
            fmt_tick(t)
        );
        t += step;
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">seconds</text><text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        (L + W - R) / 2.0,
        H - 6.0,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| !log_y || p.1 > 0.0)
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
                se.color,
                path.join(" ")
            );
        }
        let lx = L + 10.0 + i as f64 * 110.0;
        let _ = write!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            T - 2.0,
            se.color,
            lx + 16.0,
            T + 2.0,
            esc(se.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(0.03), 0.05);
    }

    #[test]
    fn charts_are_svg_and_escape_text() {
        let svg = line_chart(
            "a <b>",
            "ms",
            &[Series {
                name: "p99",
                color: "#000",
                points: vec![(0.0, 1.0), (1.0, 20.0), (2.0, 0.0)],
            }],
            true,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("<polyline"));
        let empty = line_chart("none", "x", &[], false);
        assert!(empty.ends_with("</svg>"));
    }
}
