//! The one-line JSON figures of a fault test: printed to stdout and appended to
//! `target/faults/summary.jsonl`, whether the test then passes or fails, for docs/RELIABILITY.md.

use std::io::Write;

use serde_json::{Value, json};

use super::paths;

/// Prints `{"test": name, "at": now, ...figures}` and appends it to `target/faults/summary.jsonl`.
pub fn emit(test: &str, figures: Value) {
    let mut line = json!({"test": test, "at": chrono::Utc::now().to_rfc3339()});
    if let (Some(out), Value::Object(fields)) = (line.as_object_mut(), figures) {
        out.extend(fields);
    }
    let text = format!("{line}\n");
    print!("{text}");
    let path = paths::faults_dir("").join("summary.jsonl");
    // One write of one line on an O_APPEND file: lines of tests running at once do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!("could not append to {}: {e}", path.display());
    }
}
