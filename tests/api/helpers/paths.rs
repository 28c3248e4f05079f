//! Where tests keep what they leave behind (logs, private clusters, summaries), and free ports.

use std::path::{Path, PathBuf};

/// Cargo's target directory (`CARGO_TARGET_DIR` respected): the parent of the integration tests' tmp dir.
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// `target/faults/<sub>`, created.
pub fn faults_dir(sub: &str) -> PathBuf {
    let dir = target_dir().join("faults").join(sub);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A TCP port that was free a moment ago (bound and released). The service binds it itself, so that a
/// restarted process answers on the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A short random name part (for files, databases, socket directories).
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}
