//! `chat-tokio`: stage 08 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-tokio -- --flavor multi-thread --threads 2
//! cargo run --release -p chat-tokio -- --flavor current-thread
//! nc 127.0.0.1 7878
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 08 of c10k-chat: a task per client on tokio.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: chat_net::Config,
    #[command(flatten)]
    runtime: chat_tokio::RuntimeConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chat_net::exit(
        chat_net::start(&args.config).and_then(|(listener, shutdown)| {
            chat_tokio::run(listener, args.config, shutdown, args.runtime)
        }),
    )
}
