//! `chat-select`: stage 04 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-select
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 04 of c10k-chat: one thread, select(2). Holds at most 1000 clients (FD_SETSIZE).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The flags every stage shares.
    #[command(flatten)]
    config: chat_net::Config,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chat_net::exit(
        chat_net::start(&args.config)
            .and_then(|(listener, shutdown)| chat_select::run(listener, args.config, shutdown)),
    )
}
