//! Build script: makes sure the API reference viewer (Swagger UI, from the npm registry through
//! `web/package-lock.json`) is installed in `web/node_modules`, so `src/http/docs.rs` can embed its
//! assets with `include_bytes!`. The binary serves them itself; nothing is loaded from a CDN, and the
//! viewer's code is not committed (`web/node_modules` is git-ignored).
//!
//! `npm ci` runs when `web/node_modules` is missing or older than the lock file. It needs Node.js and
//! npm (`apt-get install nodejs npm`; scripts/test.sh and scripts/dev-run.sh install them when missing).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// The package whose files are embedded, and the ones embedded.
const VIEWER_DIR: &str = "web/node_modules/swagger-ui-dist";
const VIEWER_FILES: [&str; 2] = ["swagger-ui-bundle.js", "swagger-ui.css"];

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

    let viewer = root.join(VIEWER_DIR);
    let complete = VIEWER_FILES.iter().all(|f| viewer.join(f).is_file());
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
                "`npm ci` in {} failed ({s}); the /docs viewer (swagger-ui-dist) comes from the npm registry \
                 through web/package-lock.json",
                web.display()
            ),
            Err(e) => panic!(
                "cannot run npm ({e}): building the service needs Node.js and npm to install the /docs viewer \
                 from web/package-lock.json (Debian: apt-get install nodejs npm)"
            ),
        }
    }
    for f in VIEWER_FILES {
        assert!(
            viewer.join(f).is_file(),
            "{} is missing after npm ci",
            viewer.join(f).display()
        );
    }
    println!("cargo:rustc-env=WALLET_DOCS_VIEWER_DIR={}", viewer.display());
}
