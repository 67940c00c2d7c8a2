//! What a stage and its [`Server`](super::Server) say to each other, besides bytes: the limits it is started
//! with, the refusal of a connection past them, the events it must carry out, and what a
//! flush achieved.

use std::fmt;

use crate::hub::ClientId;

/// The limits every stage takes from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-clients`: connections beyond this are refused with `! server full`.
    pub max_clients: usize,
    /// `--outbox-bytes`: what a client may be owed (see [`crate::flow`]).
    pub outbox_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: crate::DEFAULT_MAX_CLIENTS,
            outbox_bytes: crate::DEFAULT_OUTBOX_BYTES,
        }
    }
}

/// The server already holds `--max-clients` connections, or is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFull;

impl fmt::Display for ServerFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server full")
    }
}

impl std::error::Error for ServerFull {}

/// Something the stage must do for one client.
// ANCHOR: event
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Lines were queued for this client: write them now with [`Server::flush`](super::Server::flush). If its socket
    /// does not take them all, wait until it is writable and flush again.
    Flush(ClientId),
    /// This client's input had to wait for room and is accepted again: read from it. (An
    /// edge-triggered stage must read even without a new event: bytes may be waiting.)
    Resume(ClientId),
    /// Everything owed is written (the outbox is empty, so no write of it can be in flight)
    /// and the server is done with this client: end the sending side (`shutdown(SHUT_WR)`),
    /// then go on reading, until the client ends its stream
    /// ([`Server::eof`](super::Server::eof): the server then says [`Event::Close`]).
    Hangup(ClientId),
    /// Close this client's socket now. The server has already forgotten it: a slow consumer,
    /// a connection whose grace ran out, or one that is over.
    Close(ClientId),
}
// ANCHOR_END: event

/// What a [`Server::flush`](super::Server::flush) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing is owed any more.
    All,
    /// The socket is full: flush again when it is writable.
    Partly,
}
