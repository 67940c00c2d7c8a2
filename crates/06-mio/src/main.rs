//! `chat-mio`: stage 06 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-mio
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 06 of c10k-chat: one thread, one mio event loop, every client.
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
            .and_then(|(listener, shutdown)| chat_mio::run(listener, args.config, shutdown)),
    )
}
