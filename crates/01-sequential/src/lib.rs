//! # Stage 01: sequential — one client at a time
//!
//! The server every concurrency story starts from: accept a client, serve it until it leaves,
//! then accept the next. It is *correct* — every line of the protocol works — and it is useless
//! as a chat server, because while it serves one client every other client waits in the
//! kernel's accept queue, connected but unanswered. The chapter shows exactly that.
//!
//! Run it and try two clients:
//!
//! ```text
//! cargo run --release -p chat-sequential        # listening on 127.0.0.1:7878
//! nc 127.0.0.1 7878                              # welcomed
//! nc 127.0.0.1 7878                              # silence, until the first one types /quit
//! ```
//!
//! The session itself (read a line, let the hub decide, write the replies) is
//! [`chat_blocking`], shared with stages 02 and 03: the three blocking stages differ only
//! in who runs it. Here, the accepting thread runs it itself.
//!
//! Even leaving takes this thread's time. After `* bye` the session ends its side of the
//! stream and reads what the client still sends until the client closes too (closing with
//! unread input would reset the connection and destroy the lines it was still owed), for at
//! most `chat_core::CLOSE_GRACE`: a client that quits but keeps its end open holds the next
//! one back that long.

#![forbid(unsafe_code)]

use std::io;
use std::net::TcpListener;

use chat_blocking::Shared;
use chat_net::{Config, Shutdown};

/// Serves clients one after another until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let shared = Shared::new(config.limits(), &shutdown);
    chat_blocking::stop_on(&shared, &listener)?;
    while let Some(stream) = chat_net::accept(&listener, &shutdown) {
        if let Some(client) = shared.admit(stream) {
            client.serve(); // nobody else is served until this returns
        }
    }
    Ok(())
}
// ANCHOR_END: run
