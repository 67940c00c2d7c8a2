//! # Stage 02: a thread per client
//!
//! The first real fix for stage 01: give every client its own thread. Each thread runs the
//! same blocking session ([`chat_blocking`]) — block in `read`, lock the shared hub,
//! deliver — and the operating system's scheduler switches between them. The code barely
//! changes; concurrency comes from the kernel.
//!
//! ```text
//! cargo run --release -p chat-threads
//! nc 127.0.0.1 7878      # in two or more terminals: everybody chats at once
//! ```
//!
//! ## What it costs, and where it stops
//!
//! A thread is not free. Each one has a stack (we ask for [`STACK_SIZE`]; only the pages it
//! touches use memory), a kernel stack, and about four *memory mappings* (stack, guard page,
//! and the signal stack with its own guard). Linux caps mappings per process at
//! `vm.max_map_count` (65,530 by default), which caps a process at roughly 16,000 threads —
//! and past that cap `spawn` may not fail politely: the runtime can abort the whole process
//! while setting up the new thread's guard page. So this stage never gets near it: it computes
//! a thread budget from `vm.max_map_count` ([`thread_budget`]), refuses clients beyond it with
//! `! server full`, and answers a `spawn` that fails anyway the same way.
//!
//! One thread per client is also why there is no second, writing thread per client: two
//! threads per client would halve the ceiling (10,000 clients would need 20,000 threads). The
//! thread that handles a line writes it into every recipient's socket itself, without
//! blocking (`MSG_DONTWAIT`); the recipient's kernel send buffer, sized by `--outbox-bytes`, is
//! its outbox. When it is full the writing thread waits for room, reading nothing more from its
//! own client meanwhile (that is flow control: the sender waits), and a recipient whose buffer
//! stays full for `chat_core::SLOW_GRACE` is cut as a slow consumer.
//!
//! Threads are not joined: nothing keeps their handles. At shutdown [`run`] waits instead until
//! every session has said goodbye (bounded by `chat_core::SHUTDOWN_GRACE`), so the process
//! does not exit under a thread that is still writing or lingering.

#![forbid(unsafe_code)]

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use chat_blocking::Shared;
use chat_net::{Config, Shutdown};

/// The stack we ask for per client thread. The session needs little (a 4 KiB read buffer and
/// short calls); the default 2 MiB would only be address space, but a smaller request makes the
/// cost visible and honest.
pub const STACK_SIZE: usize = 128 * 1024;

/// Memory mappings one thread costs: its stack, the stack's guard page, and the alternate signal
/// stack Rust installs (with its own guard page).
const MAPS_PER_THREAD: usize = 4;

/// Threads' worth of mappings kept free for everything else (libraries, heap arenas, buffers).
const MAP_RESERVE_THREADS: usize = 1_000;

/// How many client threads this process can safely run, from `vm.max_map_count`.
// ANCHOR: thread_budget
pub fn thread_budget() -> usize {
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(65_530); // the kernel's default
    (max_map_count / MAPS_PER_THREAD).saturating_sub(MAP_RESERVE_THREADS)
}
// ANCHOR_END: thread_budget

/// Serves every client on a thread of its own until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let mut limits = config.limits();
    let budget = thread_budget();
    if budget < limits.max_clients {
        log::warn!("--max-clients {} needs more threads than vm.max_map_count allows; holding at most {budget}", limits.max_clients);
        limits.max_clients = budget;
    }
    let shared = Shared::new(limits, &shutdown);
    chat_blocking::stop_on(&shared, &listener)?;
    while let Some(stream) = chat_net::accept(&listener, &shutdown) {
        let Some(client) = shared.admit(stream) else {
            continue; // over the limit: it was told `! server full`
        };
        let client = Arc::new(client);
        let worker = Arc::clone(&client);
        let spawned = thread::Builder::new()
            .name("client".into())
            .stack_size(STACK_SIZE)
            .spawn(move || worker.serve());
        if let Err(err) = spawned {
            log::warn!("cannot start a thread ({err}); refusing a client");
            client.refuse();
        }
    }
    // Nobody joins the client threads (nothing keeps their handles), but returning now would
    // end the process under threads still saying goodbye: wait (bounded) for their sessions.
    shared.wait_for_sessions();
    Ok(())
}
// ANCHOR_END: run
