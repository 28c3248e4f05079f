//! `loadtest`: see the library's docs (`loadtest/src/lib.rs`) and docs/BENCHMARKS.md.

use std::process::ExitCode;

use clap::Parser;
use loadtest::{Args, run, summary_text};

/// The same allocator as the service binary, so that `--spawn` measures the service as deployed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of a run whose books do not balance.
const BOOKS_BROKEN: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("loadgen")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match runtime.block_on(run(args, command_line)) {
        Ok(outcome) => {
            print!("{}", summary_text(&outcome));
            if outcome.result.passed {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "loadtest FAILED: the books do not balance (see above and {})",
                    outcome.report_html.display()
                );
                ExitCode::from(BOOKS_BROKEN)
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
