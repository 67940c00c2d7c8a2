//! The whole server minus the sockets, for single-threaded event loops.
//!
//! A readiness-based stage (`select`, `epoll`, `mio`) owns one [`Server`] and does only I/O:
//!
//! 1. a new connection: [`Server::connect`] (or refuse it with [`crate::SERVER_FULL_LINE`]);
//! 2. bytes read from a client: [`Server::receive`];
//! 3. then [`Server::poll_event`] until it returns `None`: [`Event::Flush`] says a client's
//!    outbox just got bytes (write them with [`Server::outbox`]); [`Event::Close`] says close
//!    that connection once its outbox is written (or at once, if it was a slow consumer);
//! 4. a connection gone (EOF, error, or closed after `Event::Close`): [`Server::close`].
//!
//! Inside, each client has a [`Framer`] and an [`Outbox`]; the [`Hub`]'s actions are routed
//! into the outboxes, and a client whose outbox overflows is disconnected as a slow consumer
//! (its room hears `* NICK left ROOM (slow consumer)`) without slowing anybody else.

use std::collections::VecDeque;
use std::fmt;

use crate::framing::Framer;
use crate::hub::{Action, ClientId, Hub, IdMap};
use crate::outbox::Outbox;

/// The limits every stage takes from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-clients`: connections beyond this are refused with `! server full`.
    pub max_clients: usize,
    /// `--outbox-bytes`: the bound of each client's outgoing queue.
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

/// The server already holds `--max-clients` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFull;

impl fmt::Display for ServerFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server full")
    }
}

impl std::error::Error for ServerFull {}

/// Something the event loop must do for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The client's outbox went from empty to non-empty: write it (and, if the socket does not
    /// take it all, wait for writability and write the rest).
    Flush(ClientId),
    /// Close this connection after writing what its outbox holds (which is nothing for a slow
    /// consumer), then call [`Server::close`].
    Close(ClientId),
}

/// Per-connection state beside the hub's.
#[derive(Debug)]
struct Conn {
    /// Turns this client's bytes into lines.
    framer: Framer,
    /// What this client is owed.
    outbox: Outbox,
    /// True once [`Event::Close`] was issued: further input is ignored.
    closing: bool,
}

/// The hub plus a framer and an outbox per connection.
#[derive(Debug)]
pub struct Server {
    /// Rooms and nicks.
    hub: Hub,
    /// Every open connection, including ones being closed.
    conns: IdMap<Conn>,
    /// Flags of this server.
    limits: Limits,
    /// Actions from the hub not yet routed into outboxes.
    actions: VecDeque<Action>,
    /// Scratch space the hub writes actions into (kept to avoid an allocation per line).
    scratch: Vec<Action>,
    /// Work for the event loop.
    events: VecDeque<Event>,
}

impl Server {
    /// An empty server with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            hub: Hub::new(),
            conns: IdMap::default(),
            limits,
            actions: VecDeque::new(),
            scratch: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// The hub, for read-only questions (nicks, rooms, how many clients).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Open connections, including ones being closed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A new connection: welcomes it, or refuses it when `--max-clients` are already connected
    /// (then send [`crate::SERVER_FULL_LINE`] and close the socket; nothing was registered).
    pub fn connect(&mut self) -> Result<ClientId, ServerFull> {
        if self.conns.len() >= self.limits.max_clients {
            return Err(ServerFull);
        }
        let id = self.hub.connect(&mut self.scratch);
        self.conns.insert(
            id,
            Conn {
                framer: Framer::new(),
                outbox: Outbox::new(self.limits.outbox_bytes),
                closing: false,
            },
        );
        self.route();
        Ok(id)
    }

    /// Bytes read from a client's socket.
    // ANCHOR: receive
    pub fn receive(&mut self, id: ClientId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closing {
            return; // after `/quit` (or being dropped) nothing more is read from it
        }
        let (hub, scratch) = (&mut self.hub, &mut self.scratch);
        conn.framer
            .push(bytes, |frame| hub.handle(id, frame, scratch));
        self.route();
    }
    // ANCHOR_END: receive

    /// The connection is gone: the peer closed it, it failed, or the loop closed it after
    /// [`Event::Close`]. Its room hears that it left. Safe to call more than once.
    pub fn close(&mut self, id: ClientId) {
        if self.conns.remove(&id).is_some() {
            self.hub.disconnect(id, None, &mut self.scratch);
            self.route();
        }
    }

    /// The server is stopping: every client gets `* server shutting down` and an
    /// [`Event::Close`].
    pub fn shutdown(&mut self) {
        self.hub.shutdown(&mut self.scratch);
        self.route();
    }

    /// The next thing the event loop must do, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The bytes owed to a client, to write from and then [`Outbox::consume`].
    pub fn outbox(&mut self, id: ClientId) -> Option<&mut Outbox> {
        self.conns.get_mut(&id).map(|c| &mut c.outbox)
    }

    /// True when the connection is being closed (no more input is accepted from it).
    pub fn is_closing(&self, id: ClientId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.closing)
    }

    /// Moves the hub's actions into outboxes and events. A full outbox makes its client a
    /// slow consumer, whose departure is itself announced (more actions): hence the queue.
    // ANCHOR: route
    fn route(&mut self) {
        self.actions.extend(self.scratch.drain(..));
        while let Some(action) = self.actions.pop_front() {
            match action {
                Action::Send(to, line) => {
                    let Some(conn) = self.conns.get_mut(&to) else {
                        continue;
                    };
                    if conn.closing {
                        continue;
                    }
                    let was_empty = conn.outbox.is_empty();
                    if conn.outbox.push(line).is_err() {
                        // It does not read what it is sent: drop it rather than buffer forever
                        // or make everybody else wait for it.
                        conn.closing = true;
                        conn.outbox.clear();
                        self.events.push_back(Event::Close(to));
                        self.hub
                            .disconnect(to, Some(crate::SLOW_CONSUMER), &mut self.scratch);
                        self.actions.extend(self.scratch.drain(..));
                    } else if was_empty {
                        self.events.push_back(Event::Flush(to));
                    }
                }
                Action::Close(id) => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        if !conn.closing {
                            conn.closing = true;
                            self.events.push_back(Event::Close(id));
                        }
                    }
                }
            }
        }
    }
    // ANCHOR_END: route
}
