//! `chat-cluster`: stage 12 as a program, one node of a cluster. See the library docs.
//!
//! ```text
//! cargo run --release -p chat-cluster -- --addr 127.0.0.1:7001 --redis redis://127.0.0.1:6379
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Stage 12 of c10k-chat: one node of a chat shared through Redis.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: chat_net::Config,
    #[command(flatten)]
    cluster: chat_cluster::ClusterConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chat_net::exit(
        chat_net::start(&args.config).and_then(|(listener, shutdown)| {
            chat_cluster::run(listener, args.config, shutdown, args.cluster)
        }),
    )
}
