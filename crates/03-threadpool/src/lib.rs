//! # Stage 03: a thread pool — a fixed number of workers
//!
//! Stage 02 starts a thread for every client, so a flood of clients is a flood of threads.
//! The classic fix is a pool: start N workers once, hand each new connection to the pool, and
//! let a free worker serve it. Here the pool is the `threadpool` crate.
//!
//! It bounds the threads, but it does not fix the model: a chat client keeps its worker for as
//! long as it stays connected, because serving it means blocking in `read` on its socket. With
//! N workers, client N+1 is accepted, counted, and then waits in the pool's queue — connected,
//! unanswered, not even welcomed — until one of the first N leaves. That is the *starvation*
//! the C10K articles describe, and the default of 4 workers makes it easy to see:
//!
//! ```text
//! cargo run --release -p chat-threadpool -- --threads 2
//! nc 127.0.0.1 7878     # welcomed
//! nc 127.0.0.1 7878     # welcomed
//! nc 127.0.0.1 7878     # silence until one of the others types /quit
//! ```
//!
//! Compared with stage 02, the session is the same and who runs it changes:
//!
//! - `thread::Builder::spawn` becomes `pool.execute`: the connection waits in the pool's queue
//!   (counted against `--max-clients`) until a worker is free;
//! - the thread budget and the refusal when a thread cannot start are gone: the pool starts its
//!   `--threads` workers once, and nothing starts per client;
//! - at shutdown the pool is joined. Its workers finish the sessions they serve, then take the
//!   connections still queued, which the shutdown told `* server shutting down` already (they
//!   are open connections like any other), and end them.

#![forbid(unsafe_code)]

use std::io;
use std::net::TcpListener;

use chat_blocking::Shared;
use chat_net::{Config, Shutdown};
use threadpool::ThreadPool;

/// Workers when `--threads` is not given: small on purpose, so starvation is easy to see.
pub const DEFAULT_THREADS: u16 = 4;

/// Serves clients on `threads` pooled workers until `shutdown` is triggered.
// ANCHOR: run
pub fn run(
    listener: TcpListener,
    config: Config,
    threads: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    let shared = Shared::new(config.limits(), &shutdown);
    chat_blocking::stop_on(&shared, &listener)?;
    let pool = ThreadPool::with_name("worker".into(), threads);
    log::info!("{threads} workers");
    while let Some(stream) = chat_net::accept(&listener, &shutdown) {
        if let Some(client) = shared.admit(stream) {
            // Queued until a worker is free; the worker is then busy until the client leaves.
            pool.execute(move || client.serve());
        }
    }
    // Stopping: every open connection, queued or served, was told. The workers end the
    // sessions (within SHUTDOWN_GRACE), then the queued connections as they reach them.
    pool.join();
    Ok(())
}
// ANCHOR_END: run
