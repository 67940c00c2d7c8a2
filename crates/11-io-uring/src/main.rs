//! `chat-io-uring`: stage 11 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-io-uring
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 11 of c10k-chat: one thread, one io_uring (completions, not readiness).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The flags every stage shares.
    #[command(flatten)]
    config: chat_net::Config,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A kernel without io_uring (or with it disabled) is told before anything is bound.
    chat_net::exit(
        chat_io_uring::probe()
            .and_then(|()| chat_net::start(&args.config))
            .and_then(|(listener, shutdown)| chat_io_uring::run(listener, args.config, shutdown)),
    )
}
