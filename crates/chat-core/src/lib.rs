//! # chat-core: the chat protocol, sans-IO
//!
//! Every stage of c10k-chat speaks the same protocol (specified in the book's appendix,
//! `book/src/specification.md`, and explained in its protocol chapter). This crate is that protocol, written once, with **no networking
//! code**: no sockets, no clock, no threads. Bytes go in, lines to deliver come out. The stages
//! differ only in how they move those bytes, which is the whole point of the book.
//!
//! A short tour, in the order bytes flow through it:
//!
//! - [`framing`]: bytes in, complete lines out. At most [`MAX_LINE`] bytes are ever buffered for
//!   a line; over-long lines and invalid UTF-8 become [`framing::Frame`] errors.
//! - [`command`]: one line in, one [`command::Command`] (or a usage error) out.
//! - [`hub`]: the rooms and nicks. A [`hub::Hub`] takes connects, lines and disconnects and
//!   answers with [`hub::Action`]s: which client gets which line, and which client to close.
//!   A line sent to a room is one shared buffer ([`bytes::Bytes`]) cloned per recipient.
//! - [`outbox`]: a client's queue of outgoing bytes, counted.
//! - [`flow`]: flow control, the rules that keep every outbox bounded without punishing a
//!   reader for what others send: input waits for room; a client that stays behind is a
//!   *slow consumer*.
//! - [`server`]: the hub plus a framer and an outbox per client, flow control, and the timers
//!   of closing and shutdown, for every stage that is not blocking: the stage feeds it bytes
//!   and the time, and asks it whose bytes to write.
//!
//! *Invariant:* nothing in this crate blocks, sleeps, reads a clock or touches a socket.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod command;
pub mod flow;
pub mod framing;
pub mod hub;
pub mod outbox;
pub mod server;
pub mod wire;

pub use bytes::Bytes;
pub use command::Command;
pub use flow::{MIN_OUTBOX_BYTES, SLOW_GRACE};
pub use framing::{Frame, Framer};
pub use hub::{Action, ClientId, Handled, Hub};
pub use outbox::Outbox;
pub use server::{Event, Flushed, Limits, Server, ServerFull, WRITE_SLICES};

use std::time::Duration;

/// The longest line a client may send, in bytes before its `\n` (a `\r` counts).
pub const MAX_LINE: usize = 1024;

/// Default bound of a client's outgoing queue (`--outbox-bytes`), the same in every stage.
pub const DEFAULT_OUTBOX_BYTES: usize = 262_144;

/// Default connection limit (`--max-clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Default listening address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// What a connection beyond `--max-clients` is told before it is closed.
pub const SERVER_FULL_LINE: &[u8] = b"! server full\n";

/// What every client is told when the server stops (SIGINT/SIGTERM).
pub const SHUTDOWN_LINE: &[u8] = b"* server shutting down\n";

/// The reason shown in `* NICK left ROOM (slow consumer)`.
pub const SLOW_CONSUMER: &str = "slow consumer";

/// How long a connection the server closes (`/quit`, the end of its stream) may take to read
/// its last lines, from the moment the server decided to close it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping server gives all its clients, together, to read their last lines.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
