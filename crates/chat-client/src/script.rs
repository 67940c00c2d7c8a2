//! Script mode: send lines from a file or a pipe, print what comes back, and end by rules a
//! script can count on. This is what the book and the tests use where they used `nc`.
//!
//! ```sh
//! printf '/nick alice\n/join rust\nhello\n/quit\n' | cargo run -p chat-client
//! cargo run -p chat-client -- --script session.txt 127.0.0.1:7878
//! ```
//!
//! # When a script run ends
//!
//! 1. Every input line is sent as it is, in order, as soon as it is read (like `nc`): the
//!    server reads them when it gets to them.
//! 2. A `/quit` line is the last one sent. The client then waits for the server to close the
//!    connection, which the protocol promises right after `* bye`.
//! 3. When the input ends without a `/quit`, the client keeps printing what arrives until
//!    nothing has arrived for the *quiet period* (`--quiet`, 1 s by default), counted from
//!    the end of the input or the last line, whichever is later. Then it ends its side of
//!    the stream (a half-close: the protocol's normal goodbye, answered by the server
//!    handling what is left, closing, and telling the room we left) and waits for the close.
//! 4. A server that has not answered at all is not quiet, it is busy (a sequential stage
//!    serving someone else, a full pool): the client waits for it, however long, after
//!    saying so once on stderr. Interrupt it to give up.
//! 5. After our goodbye, a server that answered but does not close within `CLOSE_GRACE`
//!    plus the quiet period is given up on.
//!
//! Lines from the server go to standard output, escaped (see [`display`](crate::display)),
//! in colour only on a terminal; the client's own notes (`chat-client: ...`) go to standard
//! error. The exit status is 0 when the session ended as asked (rules 2 and 3), 1 when the
//! server ended it first (`! server full`, `* server shutting down`, a plain close) or the
//! connection failed.

use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::display::{note, render};
use crate::net::{self, FromServer};
use crate::session::{is_quit, Ending, Session};

/// The quiet period of rule 3 when `--quiet` is not given.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(1);

/// The most of one input line held at a time (see `send_input`): far more than the
/// server takes in one line ([`chat_core::MAX_LINE`]), so that over-long lines still reach
/// it whole and are answered `! line too long`.
const INPUT_CHUNK: u64 = 64 * 1024;

/// How a script run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quiet period of rule 3.
    pub quiet: Duration,
    /// Whether server lines are printed in colour.
    pub colour: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quiet: DEFAULT_QUIET,
            colour: false,
        }
    }
}

/// How a run ended, and the session as it was then (the tests look at both).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it ended.
    pub ending: Ending,
    /// Our nick and room at the end.
    pub session: Session,
}

/// Where the run is, for the rules of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Input lines are being sent.
    Sending,
    /// The input ended without a `/quit`, at this instant.
    InputEnded(Instant),
    /// We said goodbye (sent `/quit`, or half-closed) at this instant.
    Goodbye(Instant),
}

/// What the run should do next, from [`Plan::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait for something to happen, at most until the instant if there is one.
    Wait(Option<Instant>),
    /// End our side of the stream (rule 3).
    HalfClose,
    /// Stop waiting for the server to close (rule 5).
    GiveUp,
}

/// The rules of when a script run ends, as a state machine with the time passed in: no
/// sockets, no clock, no threads, so the rules are unit-tested as they are written.
// ANCHOR: plan
#[derive(Debug, Clone)]
pub struct Plan {
    /// The quiet period of rule 3.
    quiet: Duration,
    /// How long the server may take to close after our goodbye (rule 5).
    close_wait: Duration,
    /// Where we are.
    phase: Phase,
    /// When the last line arrived; `None` while the server has not answered (rule 4).
    last_heard: Option<Instant>,
}

impl Plan {
    /// A run that has sent nothing and heard nothing.
    pub fn new(quiet: Duration) -> Self {
        Plan {
            quiet,
            close_wait: chat_core::CLOSE_GRACE + quiet,
            phase: Phase::Sending,
            last_heard: None,
        }
    }

    /// A line arrived from the server.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    /// The input ended (rule 3), unless we already said goodbye.
    pub fn input_ended(&mut self, now: Instant) {
        if self.phase == Phase::Sending {
            self.phase = Phase::InputEnded(now);
        }
    }

    /// We sent a `/quit` (rule 2), or ended our side of the stream (rule 3).
    pub fn goodbye(&mut self, now: Instant) {
        if !self.goodbye_said() {
            self.phase = Phase::Goodbye(now);
        }
    }

    /// True while input lines are still to be sent.
    pub fn sending(&self) -> bool {
        self.phase == Phase::Sending
    }

    /// True once we said goodbye: a close by the server is then what we asked for.
    pub fn goodbye_said(&self) -> bool {
        matches!(self.phase, Phase::Goodbye(_))
    }

    /// What to do at `now`.
    pub fn next(&self, now: Instant) -> Step {
        // Rule 4: no quiet period, no giving up, before the server has said anything.
        let Some(heard) = self.last_heard else {
            return Step::Wait(None);
        };
        let (since, wait, then) = match self.phase {
            Phase::Sending => return Step::Wait(None),
            Phase::InputEnded(at) => (at, self.quiet, Step::HalfClose),
            Phase::Goodbye(at) => (at, self.close_wait, Step::GiveUp),
        };
        let deadline = since.max(heard) + wait;
        if now >= deadline {
            then
        } else {
            Step::Wait(Some(deadline))
        }
    }
}
// ANCHOR_END: plan

/// What the three threads of a run share.
#[derive(Debug)]
struct Shared {
    /// The rules.
    plan: Plan,
    /// Our nick and room.
    session: Session,
    /// Set by the reading thread when the server closed or reading failed.
    ended: Option<Ending>,
}

/// Runs a script on a connected `stream`: sends `input`'s lines, writes the server's lines
/// to `out` and the client's notes to `err`, and returns when the rules of the module docs
/// say the run is over.
///
/// `input` is read on a thread of its own that is left behind if the run ends first (a
/// terminal or a pipe may block forever); everything else has ended when this returns.
// ANCHOR: run
pub fn run<I, O, E>(stream: TcpStream, input: I, out: O, err: E, options: &Options) -> Outcome
where
    I: BufRead + Send + 'static,
    O: Write + Send,
    E: Write + Send,
{
    let shared = Arc::new((
        Mutex::new(Shared {
            plan: Plan::new(options.quiet),
            session: Session::new(),
            ended: None,
        }),
        Condvar::new(),
    ));
    let (out, err) = (Mutex::new(out), Mutex::new(err));
    let say = |text: &str| {
        let mut err = lock(&err);
        let _ = writeln!(err, "{}", note(text, false));
        let _ = err.flush();
    };

    // The input thread writes to the socket itself, so that a server slow to read blocks
    // only it, never the reading of what the server sends (which would deadlock both ends).
    match stream.try_clone() {
        Ok(socket) => {
            let shared = Arc::clone(&shared);
            thread::spawn(move || send_input(input, socket, &shared));
        }
        Err(e) => {
            say(&format!("cannot share the socket: {e}"));
            return Outcome {
                ending: Ending::Failed,
                session: Session::new(),
            };
        }
    }

    thread::scope(|scope| {
        let reader = stream.try_clone().map(|socket| {
            let shared = &shared;
            let (out, say) = (&out, &say);
            scope.spawn(move || {
                net::read_server(socket, |event| {
                    on_server(event, shared, options.colour, out, say);
                })
            })
        });
        if let Err(e) = reader {
            say(&format!("cannot share the socket: {e}"));
            let _ = stream.shutdown(Shutdown::Both);
            return Outcome {
                ending: Ending::Failed,
                session: Session::new(),
            };
        }

        let (state, changed) = &*shared;
        let mut state = lock(state);
        let ending = loop {
            if let Some(ending) = state.ended {
                break ending;
            }
            let now = Instant::now();
            match state.plan.next(now) {
                Step::Wait(None) => {
                    state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                Step::Wait(Some(deadline)) => {
                    state = changed
                        .wait_timeout(state, deadline - now)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                Step::HalfClose => {
                    state.plan.goodbye(now);
                    if let Err(e) = stream.shutdown(Shutdown::Write) {
                        say(&format!("cannot end our side of the connection: {e}"));
                        break Ending::Failed;
                    }
                }
                Step::GiveUp => break Ending::NoClose,
            }
        };
        let session = state.session.clone();
        drop(state);
        if let Some(message) = ending.message() {
            say(message);
        }
        // Ends the reading thread (its read returns) before the scope joins it.
        let _ = stream.shutdown(Shutdown::Both);
        Outcome { ending, session }
    })
}
// ANCHOR_END: run

/// The input thread: sends each line, stopping after a `/quit` or once the run has ended.
///
/// Lines are sent byte for byte, as `nc` would (a `\r` before the `\n`, bytes that are not
/// UTF-8, a line over the limit: the server deals with each as the protocol says); only a
/// last line without its `\n` gets one. At most [`INPUT_CHUNK`] bytes are held at a time,
/// so a huge line is sent in pieces rather than read whole into memory.
fn send_input(mut input: impl BufRead, mut socket: TcpStream, shared: &(Mutex<Shared>, Condvar)) {
    let (state, changed) = shared;
    let mut line = Vec::new();
    // True while the current line started in an earlier piece: it is not a command.
    let mut continued = false;
    loop {
        line.clear();
        match Read::take(&mut input, INPUT_CHUNK).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break, // unreadable input ends it, like its end
            Ok(_) => {}
        }
        if !lock(state).plan.sending() {
            return;
        }
        let piece = line.len() == INPUT_CHUNK as usize && line.last() != Some(&b'\n');
        if !piece && line.last() != Some(&b'\n') {
            line.push(b'\n'); // the input's last line, unfinished
        }
        if socket.write_all(&line).is_err() {
            return; // the server is gone: the reading thread reports how
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        if !piece && !continued && is_quit(text) {
            lock(state).plan.goodbye(Instant::now());
            changed.notify_all();
            return;
        }
        continued = piece;
    }
    lock(state).plan.input_ended(Instant::now());
    changed.notify_all();
}

/// The reading thread's handling of one event: print it, follow it, wake the main thread.
fn on_server<O: Write>(
    event: FromServer,
    shared: &(Mutex<Shared>, Condvar),
    colour: bool,
    out: &Mutex<O>,
    say: &dyn Fn(&str),
) {
    let (state, changed) = shared;
    match event {
        FromServer::Line(line) => {
            {
                let mut state = lock(state);
                state.session.observe(&line);
                state.plan.heard(Instant::now());
            }
            let mut out = lock(out);
            let _ = writeln!(out, "{}", render(&line, colour));
            let _ = out.flush();
        }
        FromServer::Silent => say(net::WAITING),
        FromServer::AnsweredAfter(after) => say(&net::answered_after(after)),
        FromServer::Closed => {
            let mut state = lock(state);
            let ending = state.session.ending(state.plan.goodbye_said());
            state.ended.get_or_insert(ending);
        }
        FromServer::Failed(e) => {
            say(&format!("reading from the server failed: {e}"));
            lock(state).ended.get_or_insert(Ending::Failed);
        }
    }
    changed.notify_all();
}

/// Locks a mutex; a thread that panicked while holding it left nothing half-written that
/// matters here, so its data is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to `addr` and runs a script; a failure to connect is written to `err` and
/// returned as [`Ending::Failed`].
pub fn connect_and_run<I, O, E>(
    addr: &str,
    input: I,
    out: O,
    mut err: E,
    options: &Options,
) -> Outcome
where
    I: BufRead + Send + 'static,
    O: Write + Send,
    E: Write + Send,
{
    match net::connect(addr) {
        Ok(stream) => run(stream, input, out, err, options),
        Err(e) => {
            let _ = writeln!(err, "{}", note(&e.to_string(), false));
            Outcome {
                ending: Ending::Failed,
                session: Session::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(1);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn nothing_ends_while_input_is_being_sent() {
        let t0 = Instant::now();
        let mut plan = Plan::new(Q);
        plan.heard(t0);
        assert_eq!(plan.next(at(t0, 60_000)), Step::Wait(None));
        assert!(plan.sending() && !plan.goodbye_said());
    }

    #[test]
    fn after_the_input_ends_a_quiet_period_then_a_half_close() {
        let t0 = Instant::now();
        let mut plan = Plan::new(Q);
        plan.heard(t0);
        plan.input_ended(at(t0, 100));
        assert!(!plan.sending());
        assert_eq!(plan.next(at(t0, 500)), Step::Wait(Some(at(t0, 1100))));
        // A line arriving pushes the end back: the quiet period starts again.
        plan.heard(at(t0, 900));
        assert_eq!(plan.next(at(t0, 1100)), Step::Wait(Some(at(t0, 1900))));
        assert_eq!(plan.next(at(t0, 1900)), Step::HalfClose);
    }

    #[test]
    fn a_server_that_has_not_answered_is_waited_for() {
        let t0 = Instant::now();
        let mut plan = Plan::new(Q);
        plan.input_ended(t0);
        assert_eq!(plan.next(at(t0, 3_600_000)), Step::Wait(None));
        // It answers an hour late: the quiet period counts from then.
        plan.heard(at(t0, 3_600_000));
        assert_eq!(
            plan.next(at(t0, 3_600_500)),
            Step::Wait(Some(at(t0, 3_601_000)))
        );
    }

    #[test]
    fn after_a_goodbye_we_wait_for_the_close_within_a_bound() {
        let t0 = Instant::now();
        let mut plan = Plan::new(Q);
        plan.heard(t0);
        plan.goodbye(at(t0, 10)); // a /quit line was sent
        assert!(plan.goodbye_said() && !plan.sending());
        plan.input_ended(at(t0, 20)); // the input ending afterwards changes nothing
        assert!(plan.goodbye_said());
        let bound = chat_core::CLOSE_GRACE + Q;
        let deadline = at(t0, 10) + bound;
        assert_eq!(plan.next(at(t0, 20)), Step::Wait(Some(deadline)));
        assert_eq!(plan.next(deadline), Step::GiveUp);
    }

    #[test]
    fn a_quit_before_the_server_answered_waits_for_it() {
        let t0 = Instant::now();
        let mut plan = Plan::new(Q);
        plan.goodbye(t0);
        assert_eq!(plan.next(at(t0, 100_000)), Step::Wait(None));
    }
}
