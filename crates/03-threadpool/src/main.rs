//! `chat-threadpool`: stage 03 as a program. See the library docs for what it shows.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 03 of c10k-chat: a fixed pool of worker threads, one client per worker.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: chat_net::Config,
    /// Worker threads; a client holds one for as long as it stays connected.
    #[arg(long, default_value_t = chat_threadpool::DEFAULT_THREADS, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chat_net::exit(
        chat_net::start(&args.config).and_then(|(listener, shutdown)| {
            chat_threadpool::run(listener, args.config, args.threads.into(), shutdown)
        }),
    )
}
