//! `chat-futures`: stage 07 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-futures
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 07 of c10k-chat: async/await on a hand-written runtime (epoll reactor, executor,
/// wakers).
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
            .and_then(|(listener, shutdown)| chat_futures::run(listener, args.config, shutdown)),
    )
}
