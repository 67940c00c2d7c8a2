//! The checks. Each is a function `fn(&Target)` that starts its own server, drives clients
//! and panics with a precise message on the first deviation from `PROTOCOL.md`.
//!
//! - [`alone`]: what one client can see by itself (every mode, `sequential` included).
//! - [`room`]: what clients see of each other (modes that serve several clients at once).
//! - [`stress`]: bad input, slow consumers, many clients, limits, descriptors, shutdown.
//! - [`limits`]: the limit of each mode (one at a time, N at a time).
//! - [`backlog`]: what a server owes and holds: lines owed to a quitter, a quitter that
//!   never reads, a flooder beside other clients, thousands of idle clients.
//!
//! How a check proves that *nothing* arrived without sleeping: the client sends `/who`
//! and asserts that the reply is its very next line ([`Client::sync`]). Only the mode
//! limits, where a client must get nothing at all, listen for a short silence instead
//! (that can only pass wrongly, never fail wrongly).
//!
//! Run them through a stage, e.g. `cargo test -p chat-threads --test conformance`, or one
//! check by name: `cargo test -p chat-threads --test conformance -- max_clients`.

pub mod alone;
pub mod backlog;
pub mod limits;
pub mod room;
pub mod stress;

pub use alone::*;
pub use backlog::*;
pub use limits::*;
pub use room::*;
pub use stress::*;

use crate::{Client, Server};

/// The longest line the protocol accepts, in bytes before the `\n` (`MAX_LINE`).
pub const MAX_LINE: usize = 1024;

/// The error for a line over `MAX_LINE`.
pub const TOO_LONG: &str = "! line too long (max 1024 bytes)";

/// The seed of the junk the garbage checks send (see [`crate::garbage`]).
pub const GARBAGE_SEED: u64 = 0x00C1_0C4A_7000_0001;

/// Connects `n` clients one after the other into `lobby`. Each is welcomed, and every
/// client already there must see `* NICK joined lobby` as its next line (checked at
/// once, so afterwards nothing is left unread). Labels are `{label}0`, `{label}1`, ...
#[track_caller]
pub fn lobby(server: &Server, n: usize, label: &str) -> Vec<Client> {
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    for i in 0..n {
        let new = server.join(&format!("{label}{i}"));
        let joined = format!("* {} joined lobby", new.nick);
        for old in &mut clients {
            old.expect(&joined);
        }
        clients.push(new);
    }
    clients
}

/// `n` bytes of printable text that show where they were cut: `0123456789012...`.
pub fn ruler(n: usize) -> String {
    (0..n).map(|i| char::from(b'0' + (i % 10) as u8)).collect()
}

/// The first `n` characters of `line`, with `...` if it was longer (for messages).
pub fn clip(line: &str, n: usize) -> String {
    match line.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}
