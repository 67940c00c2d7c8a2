//! `chat-bench`: see `lib.rs` for the tour and `chat-bench --help` for usage.
//! Example (it is not on `PATH`):
//! `cargo run --release -p chat-bench -- run --addr 127.0.0.1:7878 --scenario chat --json out.json`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match chat_bench::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
