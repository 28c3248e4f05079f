//! Build script: makes sure the front-end packages the binary serves are installed in `web/node_modules`
//! from the npm registry through `web/package-lock.json`: the API reference viewer (Swagger UI, embedded by
//! `src/http/docs.rs`) and the dashboard's charting library (Chart.js, embedded by
//! `src/http/dashboard.rs`), both with `include_bytes!`. The binary serves them itself; nothing is loaded
//! from a CDN, and their code is not committed (`web/node_modules` is git-ignored).
//!
//! `npm ci` runs when `web/node_modules` is missing or older than the lock file. It needs Node.js and
//! npm (`apt-get install nodejs npm`; scripts/test.sh and scripts/dev-run.sh install them when missing).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// Each embedded package: its folder, the files embedded, and the environment variable that tells the
/// crate where the folder is.
const PACKAGES: [(&str, &[&str], &str); 2] = [
    (
        "web/node_modules/swagger-ui-dist",
        &["swagger-ui-bundle.js", "swagger-ui.css"],
        "WALLET_DOCS_VIEWER_DIR",
    ),
    // The prebuilt UMD file: one script, no module loader or bundler needed in the page.
    (
        "web/node_modules/chart.js/dist",
        &["chart.umd.min.js"],
        "WALLET_DASHBOARD_CHART_DIR",
    ),
];

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("web");
    let lock = web.join("package-lock.json");
    // npm writes this after every successful install; older than the lock means the lock changed since.
    let installed = web.join("node_modules/.package-lock.json");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed=web/node_modules/.package-lock.json");

    let complete = PACKAGES
        .iter()
        .all(|(dir, files, _)| files.iter().all(|f| root.join(dir).join(f).is_file()));
    let stale = match (modified(&installed), modified(&lock)) {
        (Some(i), Some(l)) => i < l,
        _ => true,
    };
    if !complete || stale {
        let status = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&web)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "`npm ci` in {} failed ({s}); the /docs viewer (swagger-ui-dist) and the dashboard's charts \
                 (chart.js) come from the npm registry through web/package-lock.json",
                web.display()
            ),
            Err(e) => panic!(
                "cannot run npm ({e}): building the service needs Node.js and npm to install the /docs viewer \
                 and the dashboard's charts from web/package-lock.json (Debian: apt-get install nodejs npm)"
            ),
        }
    }
    for (dir, files, var) in PACKAGES {
        let dir = root.join(dir);
        for f in files {
            assert!(
                dir.join(f).is_file(),
                "{} is missing after npm ci",
                dir.join(f).display()
            );
        }
        println!("cargo:rustc-env={var}={}", dir.display());
    }
}
