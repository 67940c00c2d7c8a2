//! `chat-async-std`: stage 09 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-async-std
//! nc 127.0.0.1 7878
//! ```
//!
//! async-std sizes its global executor from `ASYNC_STD_THREAD_COUNT` (default: one thread per
//! core).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 09 of c10k-chat: async-std (deprecated upstream in favor of smol).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: chat_net::Config,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chat_net::exit(
        chat_net::start(&args.config)
            .and_then(|(listener, shutdown)| chat_async_std::run(listener, args.config, shutdown)),
    )
}
