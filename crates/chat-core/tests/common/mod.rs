//! A stage without sockets: what an event loop does around `Server`, over in-memory "sockets"
//! whose readers either take everything at once (`drains`) or take nothing at all.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of it; a panic fails the test

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use chat_core::{ClientId, Event, Flushed, Limits, Server};

/// One client's socket, as both ends see it.
#[derive(Debug, Default)]
pub struct Socket {
    /// Bytes the client wrote that the server has not read yet.
    pub inbound: VecDeque<u8>,
    /// Bytes the client has received.
    pub received: Vec<u8>,
    /// Whether the client reads: its socket takes whatever is written.
    pub drains: bool,
    /// The client ended its stream; the server sees it once `inbound` is read.
    pub ended: bool,
    /// The server has read the end of the client's stream.
    pub eof_seen: bool,
    /// The server ended its sending side (after `Event::Hangup`).
    pub hung_up: bool,
    /// The server closed the socket (`Event::Close`).
    pub closed: bool,
    /// The server closed it abruptly: neither after a hang-up nor after the client's own end
    /// of stream (a slow consumer, or a grace that ran out).
    pub cut: bool,
}

/// A `Server` and the sockets of its clients, driven like an event loop.
#[derive(Debug)]
pub struct Stage {
    pub server: Server,
    pub sockets: HashMap<ClientId, Socket>,
    pub start: Instant,
    pub now: Instant,
    /// The largest read the stage does (`READ_BUF`).
    pub read_size: usize,
    /// Every event the server emitted, in order.
    pub log: Vec<Event>,
}

impl Stage {
    pub fn new(outbox_bytes: usize) -> Self {
        Self::with(Server::new(Limits {
            max_clients: 1000,
            outbox_bytes,
        }))
    }

    /// A stage around a given server (a cluster node, say).
    pub fn with(server: Server) -> Self {
        let now = Instant::now();
        Self {
            server,
            sockets: HashMap::new(),
            start: now,
            now,
            read_size: 64 * 1024,
            log: Vec::new(),
        }
    }

    /// A new client, welcomed (on a cluster node: once the broker gave it its nick); `drains`
    /// says whether it reads.
    pub fn connect(&mut self, drains: bool) -> ClientId {
        let id = self.server.connect(self.now).unwrap();
        self.sockets.insert(
            id,
            Socket {
                drains,
                ..Socket::default()
            },
        );
        self.settle();
        id
    }

    /// The client writes `bytes` (the server reads them at its own pace, in `settle`).
    pub fn write(&mut self, id: ClientId, bytes: &[u8]) {
        self.sockets.get_mut(&id).unwrap().inbound.extend(bytes);
    }

    /// The client ends its stream.
    pub fn end(&mut self, id: ClientId) {
        self.sockets.get_mut(&id).unwrap().ended = true;
    }

    /// Time passes.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.settle();
    }

    /// Lets the client start or stop reading.
    pub fn set_drains(&mut self, id: ClientId, drains: bool) {
        self.sockets.get_mut(&id).unwrap().drains = drains;
    }

    /// One read of at most `max` bytes from `id`, if the server reads it now.
    pub fn read_once(&mut self, id: ClientId, max: usize) -> bool {
        if !self.server.reading(id) {
            return false;
        }
        let Some(socket) = self.sockets.get_mut(&id) else {
            return false;
        };
        if socket.closed {
            return false;
        }
        if socket.inbound.is_empty() {
            if socket.ended {
                socket.ended = false; // seen once
                socket.eof_seen = true;
                self.server.eof(id, self.now);
                return true;
            }
            return false;
        }
        let n = max.min(socket.inbound.len());
        let bytes: Vec<u8> = socket.inbound.drain(..n).collect();
        self.server.receive(id, &bytes, self.now);
        true
    }

    /// Runs the loop until nothing more happens: read what can be read (one read per client
    /// per turn, as a fair event loop does), carry out every event, write to the readers.
    pub fn settle(&mut self) {
        // A bound that only a loop that never stops moving reaches: with one-byte reads, a
        // hundred kilobytes of input is a hundred thousand turns of honest progress (proptest
        // found such a case once: `flow_model.proptest-regressions`).
        for _ in 0..10_000_000 {
            let mut busy = self.carry_out();
            let mut ids: Vec<ClientId> = self.sockets.keys().copied().collect();
            ids.sort();
            for id in ids {
                busy |= self.read_once(id, self.read_size);
            }
            // Readers whose socket was full can take more now.
            let mut ids: Vec<ClientId> = self.sockets.keys().copied().collect();
            ids.sort();
            for id in ids {
                if self.sockets[&id].drains && !self.sockets[&id].closed {
                    busy |= self.flush(id);
                }
            }
            busy |= self.carry_out();
            if !busy {
                return;
            }
        }
        panic!("the stage never settles");
    }

    /// Carries out the server's events; true if there were any.
    fn carry_out(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.server.poll_event() {
            any = true;
            self.log.push(event);
            match event {
                Event::Flush(id) => {
                    self.flush(id);
                }
                Event::Resume(_) => {} // `settle` reads everybody anyway
                Event::Hangup(id) => {
                    let socket = self.sockets.get_mut(&id).unwrap();
                    assert!(!socket.hung_up, "{id} hung up twice");
                    socket.hung_up = true;
                }
                Event::Close(id) => {
                    let socket = self.sockets.get_mut(&id).unwrap();
                    assert!(!socket.closed, "{id} closed twice");
                    socket.cut = !socket.hung_up && !socket.eof_seen;
                    socket.closed = true;
                }
            }
        }
        any
    }

    /// Writes what `id` is owed if its client reads; true if anything was written.
    fn flush(&mut self, id: ClientId) -> bool {
        let Some(socket) = self.sockets.get_mut(&id) else {
            return false;
        };
        if socket.closed || socket.hung_up {
            return false;
        }
        let drains = socket.drains;
        let mut wrote = false;
        let result = self.server.flush(id, self.now, |slices| {
            if !drains {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for s in slices {
                socket.received.extend_from_slice(s);
                n += s.len();
            }
            wrote |= n > 0;
            Ok(n)
        });
        if drains {
            assert_eq!(result.unwrap(), Flushed::All);
        }
        wrote
    }

    /// The lines `id` has received, without their `\n`.
    pub fn lines(&self, id: ClientId) -> Vec<String> {
        String::from_utf8(self.sockets[&id].received.clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What the server says `id` is owed (its outbox's cost), 0 once it is forgotten.
    pub fn owed(&self, id: ClientId) -> usize {
        self.server.outbox(id).map_or(0, |o| o.cost())
    }
}
