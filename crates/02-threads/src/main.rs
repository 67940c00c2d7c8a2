//! `chat-threads`: stage 02 as a program. See the library docs for what it shows.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 02 of c10k-chat: a thread per client.
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
            .and_then(|(listener, shutdown)| chat_threads::run(listener, args.config, shutdown)),
    )
}
