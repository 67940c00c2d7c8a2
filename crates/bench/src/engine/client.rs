//! One simulated chat client: its state machine, and how it reads and writes.
//!
//! A client goes `Waiting → Connecting → AwaitWelcome → AwaitJoin → Ready`
//! (churners then `Quitting`, and start over), or ends `Closed` at any point.
//! Each step is a free function over the client and the [`Core`] (the shared
//! accounting), so that the event loop can hold one client and the rest of
//! the engine mutably at the same time. Which received lines mean what is the
//! [`Target`]'s business: this file holds no word of any protocol.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::{Core, CHURN_STEP_TIMEOUT};
use crate::ledger::Receipt;
use crate::marker;
use crate::scenario::Target;

/// A received line longer than this is dropped (our servers never send one;
/// the bound keeps a misbehaving server from growing our buffers forever).
pub(super) const MAX_LINE: usize = 64 * 1024;
/// Receive buffer of a slow client. Small, so that the server notices the
/// slow reader after a few hundred KiB instead of after the loopback
/// autotuning limit (32 MiB here).
const SLOW_RCVBUF: usize = 4096;

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A member of a room that reads everything and (in most scenarios) sends.
    Member,
    /// A member that stops reading once it is in its room.
    Slow,
    /// A client that connects, joins, quits and starts over.
    Churner,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Not connected yet.
    Waiting,
    /// Non-blocking connect issued, not completed.
    Connecting,
    /// Connected, waiting for the welcome line.
    AwaitWelcome,
    /// Join sent, waiting for its confirmation.
    AwaitJoin,
    /// In its room.
    Ready,
    /// (Churners) quit sent, waiting for the server to close.
    Quitting,
    /// Closed; see the counters for why.
    Closed,
}

impl State {
    /// Still on the way in.
    pub fn in_handshake(self) -> bool {
        matches!(
            self,
            State::Connecting | State::AwaitWelcome | State::AwaitJoin
        )
    }
}

/// One simulated chat client.
#[derive(Debug)]
pub(super) struct Client {
    /// What it is for.
    pub kind: Kind,
    /// Where it is in its life.
    pub state: State,
    /// Its socket, while open.
    pub stream: Option<TcpStream>,
    /// The unfinished line at the end of the last read.
    partial: Vec<u8>,
    /// True while skipping the rest of an overlong line.
    discarding: bool,
    /// Outgoing bytes not yet taken by the kernel start at `out_pos`.
    pub out: Vec<u8>,
    /// How much of `out` the kernel already took.
    out_pos: usize,
    /// Leading pending bytes that are control lines (hello, join, quit), not
    /// messages: they are not counted as sent messages.
    out_ctrl: usize,
    /// Sequence number of the next message this client builds.
    pub next_seq: u32,
    /// Intended time of its next message, microseconds since the epoch.
    pub next_due: f64,
    /// When its current connect started.
    pub connect_start: Instant,
    /// (Churners) when the current step must be over.
    pub deadline: Option<Instant>,
}

impl Client {
    /// A client of `kind`, not connected.
    pub fn new(kind: Kind) -> Self {
        Client {
            kind,
            state: State::Waiting,
            stream: None,
            partial: Vec::new(),
            discarding: false,
            out: Vec::new(),
            out_pos: 0,
            out_ctrl: 0,
            next_seq: 0,
            next_due: 0.0,
            connect_start: Instant::now(),
            deadline: None,
        }
    }

    /// Forgets the buffers of a previous connection (churners reconnect).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
        self.out.clear();
        self.out_pos = 0;
        self.out_ctrl = 0;
    }

    /// Outgoing bytes the kernel has not taken yet.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Creates a non-blocking socket for client `id` and starts connecting it.
pub(super) fn open_socket(target: &Target, id: usize, slow: bool) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = target.addr_for(id);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(source) = target.source {
        // Port 0: the kernel still picks the port, among those free for this source address.
        socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    // Lines are written whole and often batched; Nagle would only add delay.
    socket.set_nodelay(true)?;
    if slow {
        socket.set_recv_buffer_size(SLOW_RCVBUF)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// After a writable (or error) event on a connecting socket: `Some(Ok)` when
/// connected, `Some(Err)` when it failed, `None` when it is still in progress.
pub(super) fn connect_result(c: &mut Client) -> Option<io::Result<()>> {
    let stream = c.stream.as_mut()?;
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
}

/// The connect failed: count it and close.
pub(super) fn fail(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind == Kind::Churner {
        core.n.churn_failed += 1;
        core.churn_idle.push_back(id);
    } else {
        core.n.failed += 1;
    }
    close(c, core);
}

/// Closes a client (churner slots are queued for a restart by the caller).
fn close(c: &mut Client, core: &mut Core) {
    if c.kind != Kind::Churner && c.state.in_handshake() {
        core.in_flight -= 1;
    }
    c.stream = None;
    c.state = State::Closed;
}

/// The TCP connection is up: say hello, then wait for the welcome.
pub(super) fn on_connected(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind != Kind::Churner {
        core.n.connected += 1;
    }
    let hello_id = if c.kind == Kind::Churner {
        core.churn_serial
    } else {
        id
    };
    let room = core.ledger.room_of(id.min(core.members.saturating_sub(1)));
    if let Some(line) = core.target.hello_line(hello_id, room) {
        queue_control(c, &line);
        flush(c, id, core);
    }
    c.state = State::AwaitWelcome;
    if !core.target.waits_for_welcome() {
        on_welcomed(c, id, core);
    }
}

/// The server welcomed the client: join its room (or be ready).
fn on_welcomed(c: &mut Client, id: usize, core: &mut Core) {
    let waited = c.connect_start.elapsed().as_micros() as u64;
    if c.kind == Kind::Churner {
        core.churn_hist.saturating_record(waited.max(1));
    } else {
        core.n.welcomed += 1;
        core.welcome_hist.saturating_record(waited.max(1));
    }
    // Churners join the room of a member, so members see them come and go.
    let room = if c.kind == Kind::Churner {
        (id - core.members) % core.ledger.rooms().max(1)
    } else {
        core.ledger.room_of(id)
    };
    let Some(line) = core.target.join_line(id, room) else {
        on_ready(c, id, core);
        return;
    };
    queue_control(c, &line);
    c.state = State::AwaitJoin;
    if !flush(c, id, core) {
        return;
    }
    if !core.target.waits_for_join_ack() {
        on_ready(c, id, core);
    }
}

/// The client is in its room.
fn on_ready(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind == Kind::Churner {
        // A churner's cycle ends with a quit (the server closes, so the
        // TIME_WAIT lands on the server's side, not on our ephemeral ports).
        match core.target.quit_line().map(str::to_owned) {
            None => {
                core.n.churn_cycles += 1;
                c.stream = None;
                c.state = State::Closed;
                core.churn_idle.push_back(id);
            }
            Some(quit) => {
                queue_control(c, &quit);
                c.state = State::Quitting;
                c.deadline = Some(Instant::now() + CHURN_STEP_TIMEOUT);
                flush(c, id, core);
            }
        }
        return;
    }
    core.in_flight -= 1;
    core.n.ready += 1;
    c.state = State::Ready;
}

/// Appends a control line (hello, join, quit) to the client's output.
fn queue_control(c: &mut Client, line: &str) {
    c.out.extend_from_slice(line.as_bytes());
    c.out.push(b'\n');
    c.out_ctrl += line.len() + 1;
}

// ANCHOR: flush
/// Writes as much pending output as the kernel takes. Counts every complete
/// message line the kernel took as sent. Returns false if the socket died.
pub(super) fn flush(c: &mut Client, id: usize, core: &mut Core) -> bool {
    let Some(stream) = c.stream.as_mut() else {
        return false;
    };
    while c.out_pos < c.out.len() {
        match stream.write(&c.out[c.out_pos..]) {
            Ok(0) => break,
            Ok(n) => {
                let taken = &c.out[c.out_pos..c.out_pos + n];
                let ctrl = n.min(c.out_ctrl);
                c.out_ctrl -= ctrl;
                let lines = taken[ctrl..].iter().filter(|&&b| b == b'\n').count();
                if lines > 0 && id < core.members {
                    core.ledger.add_sent(id, lines as u32);
                    core.n.sent += lines as u64;
                }
                c.out_pos += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                closed_by_server(c, id, core);
                return false;
            }
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    } else if c.out_pos > 64 * 1024 {
        // Keep the buffer from creeping: drop what was written.
        c.out.drain(..c.out_pos);
        c.out_pos = 0;
    }
    true
}
// ANCHOR_END: flush

/// The server closed the connection (EOF, reset, broken pipe).
fn closed_by_server(c: &mut Client, id: usize, core: &mut Core) {
    match (c.kind, c.state) {
        (Kind::Churner, State::Quitting) => {
            core.n.churn_cycles += 1;
            core.churn_idle.push_back(id);
        }
        (Kind::Churner, _) => {
            core.n.churn_failed += 1;
            core.churn_idle.push_back(id);
        }
        (_, State::Ready) => {
            core.n.disconnected_by_server += 1;
            core.ledger.set_disconnected(id);
            if c.kind == Kind::Slow {
                core.dropped_slow.insert(id);
            }
        }
        _ => core.n.failed += 1,
    }
    close(c, core);
}

// ANCHOR: read_all
/// Reads what the socket holds, splitting the bytes into lines.
///
/// One `read` takes up to 64 KiB, so it returns every line the kernel holds
/// for this socket (hundreds, when the server batches). A read that returns
/// less than the buffer emptied the socket: the next line to arrive raises a
/// new readiness edge, so we stop there instead of paying one more system
/// call to be told `WouldBlock` (tokio makes the same bet). Only when the
/// event said the peer closed do we read on to the end, to see it.
pub(super) fn read_all(
    c: &mut Client,
    id: usize,
    core: &mut Core,
    scratch: &mut [u8],
    to_the_end: bool,
) {
    loop {
        // A slow client stops reading once it is in its room: that is the
        // whole point of it.
        if c.kind == Kind::Slow && c.state == State::Ready {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let n = match stream.read(scratch) {
            Ok(0) => {
                closed_by_server(c, id, core);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                closed_by_server(c, id, core);
                return;
            }
        };
        // One clock reading per read, not per line: a read's lines arrived together.
        let now_us = core.now_us();
        let mut data = &scratch[..n];
        while let Some(pos) = find_newline(data) {
            let (line, rest) = (&data[..pos], &data[pos + 1..]);
            data = rest;
            if c.discarding {
                c.discarding = false;
            } else if c.partial.is_empty() {
                on_line(c, id, core, line, now_us);
            } else {
                let mut whole = std::mem::take(&mut c.partial);
                whole.extend_from_slice(line);
                on_line(c, id, core, &whole, now_us);
                whole.clear();
                c.partial = whole;
            }
            if c.stream.is_none() {
                return;
            }
        }
        if !c.discarding && !data.is_empty() {
            if c.partial.len() + data.len() > MAX_LINE {
                c.partial.clear();
                c.discarding = true;
                core.n.overlong_lines += 1;
            } else {
                c.partial.extend_from_slice(data);
            }
        }
        if n < scratch.len() && !to_the_end {
            return;
        }
    }
}
// ANCHOR_END: read_all

/// The position of the first `\n` in `data`.
///
/// The generator's hottest loop: every byte it receives passes through here.
/// A byte-by-byte search costs a comparison per byte; this one looks at
/// eight bytes at a time with the classic "has a zero byte" trick on a `u64`
/// (`x - 0x01..01` borrows into the high bit of every byte that was zero),
/// then finds the exact byte in the word that had one.
pub(super) fn find_newline(data: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = data.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // Bytes equal to '\n' become zero...
        let x = u64::from_ne_bytes(word) ^ NEWLINES;
        // ...and a zero byte sets its high bit here (other bytes may too,
        // but only above a real zero, so the first hit is exact).
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return chunk.iter().position(|&b| b == b'\n').map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

// ANCHOR: on_line
/// Accounts one received line.
fn on_line(c: &mut Client, id: usize, core: &mut Core, line: &[u8], now_us: u64) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if c.kind == Kind::Churner && (c.state == State::Ready || c.state == State::Quitting) {
        // A churner in its room only waits for the server to close it.
        return;
    }
    if c.state == State::Ready {
        // The hot path: a message from another member.
        if let Some(m) = marker::find(line) {
            if matches!(
                core.ledger.on_marker(id, m),
                Receipt::InOrder | Receipt::Reordered
            ) {
                core.on_delivery(m.intended_us, now_us);
            }
        } else if let Some(nick) = core.target.slow_consumer_nick(line) {
            on_slow_notice(core, nick);
        }
        return;
    }
    if core.target.is_refusal(line) {
        if c.kind == Kind::Churner {
            core.n.churn_failed += 1;
            core.churn_idle.push_back(id);
        } else {
            core.n.rejected_full += 1;
        }
        close(c, core);
        return;
    }
    if c.state == State::AwaitWelcome {
        if let Some(nick) = core.target.welcome_nick(line) {
            if c.kind != Kind::Churner && !nick.is_empty() {
                // Remember the nick, to recognise notices about this client.
                let nick = String::from_utf8_lossy(nick).into();
                core.nicks.insert(nick, id);
            }
            on_welcomed(c, id, core);
            return;
        }
    }
    if c.state == State::AwaitJoin && core.target.is_join_ack(line) {
        on_ready(c, id, core);
    }
}
// ANCHOR_END: on_line

/// The server dropped the member named `nick` for not reading.
fn on_slow_notice(core: &mut Core, nick: &[u8]) {
    core.n.slow_notices += 1;
    let nick = String::from_utf8_lossy(nick);
    if let Some(&client) = core.nicks.get(nick.as_ref()) {
        if core.dropped_slow.insert(client) {
            core.ledger.set_disconnected(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_search_agrees_with_a_plain_scan() {
        // Every length up to three words, with the newline (or none) at
        // every position, and bytes that trip naive zero-byte tricks.
        for len in 0..25 {
            for at in 0..=len {
                let mut data: Vec<u8> = (0..len).map(|i| [0x0b, 0x8a, b'x', 0x09][i % 4]).collect();
                if at < len {
                    data[at] = b'\n';
                    if at + 1 < len {
                        data[at + 1] = b'\n';
                    }
                }
                let want = data.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&data), want, "len {len} at {at}");
            }
        }
    }
}
