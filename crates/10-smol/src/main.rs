//! `chat-smol`: stage 10 as a program. See the library docs for what it shows.
//!
//! ```text
//! cargo run --release -p chat-smol                  # one thread
//! cargo run --release -p chat-smol -- --threads 2   # one executor, two threads
//! nc 127.0.0.1 7878
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 10 of c10k-chat: smol.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: chat_net::Config,
    /// Threads that run the executor (and, when idle, drive the reactor). 1: everything on
    /// the main thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = usize::from(args.threads);
    chat_net::exit(
        chat_net::start(&args.config).and_then(|(listener, shutdown)| {
            chat_smol::run(listener, args.config, shutdown, threads)
        }),
    )
}
