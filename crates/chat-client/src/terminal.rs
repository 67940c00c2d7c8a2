//! Interactive mode: a person at a terminal. Kept thin: what a line means, how it is shown
//! and what the prompt says are decided in [`display`](crate::display) and
//! [`session`](crate::session); this module only moves lines between the socket, the
//! line editor and the screen.
//!
//! Two threads: this one runs the line editor (`rustyline`) and sends what is typed; a
//! reading thread prints what the server sends through rustyline's `ExternalPrinter`, which
//! clears the prompt line, prints the line above it and draws the prompt and the half-typed
//! text again, so that what others say never breaks what you are typing.
//!
//! The prompt is `NICK@ROOM> `, as the server last told us. A prompt is fixed while one line
//! is edited, so after a `/nick` or `/join` the next prompt waits (at most [`ANSWER_WAIT`])
//! for the server's answer, and then shows it.

use std::io::Write as _;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::display::{note, render, use_colour_on_stdout};
use crate::net::{self, FromServer, ANSWER_WAIT};
use crate::session::{is_quit, Ending, Session};

/// How many lines the history keeps (in memory only: nothing is written to disk).
const HISTORY: usize = 1000;

/// How long to wait for the server to close after our `/quit`: the protocol's bound on
/// closing, and a margin.
const CLOSE_WAIT: Duration = Duration::from_secs(chat_core::CLOSE_GRACE.as_secs() + 1);

/// What the two threads share.
#[derive(Debug, Default)]
struct Live {
    /// Our nick and room, followed from the server's lines.
    session: Session,
    /// How many answers to a `/nick` or `/join` (or errors) have arrived so far.
    answers: u64,
    /// Set once we sent `/quit`.
    goodbye: bool,
    /// Set by the reading thread when the connection ended.
    ended: Option<Ending>,
    /// Set by this thread when it no longer reads from the terminal.
    done: bool,
}

/// Shared state and the condition variable that says it changed.
type Shared = Arc<(Mutex<Live>, Condvar)>;

/// The line editor could not take the terminal; the caller falls back to script mode.
#[derive(Debug)]
pub struct Unsupported(pub ReadlineError);

/// Runs an interactive session on a connected `stream` until the person quits or the
/// server closes; `Err` when this terminal cannot do line editing (then nothing was read
/// from the socket yet and the caller may use it for script mode).
// ANCHOR: interactive
pub fn run(stream: &TcpStream) -> Result<Ending, Unsupported> {
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(HISTORY)
        .map_err(Unsupported)?
        .build();
    let mut editor = DefaultEditor::with_config(config).map_err(Unsupported)?;
    // Fails on a terminal rustyline cannot drive (TERM=dumb, say): no editing there.
    let printer = editor.create_external_printer().map_err(Unsupported)?;
    let colour = use_colour_on_stdout();
    let shared: Shared = Arc::default();

    let reader = match stream.try_clone() {
        Ok(socket) => {
            let shared = Arc::clone(&shared);
            thread::spawn(move || read_and_print(socket, &shared, printer, colour))
        }
        Err(e) => {
            println!("{}", note(&format!("cannot share the socket: {e}"), colour));
            return Ok(Ending::Failed);
        }
    };

    let ending = chat(&mut editor, stream, &shared, colour);

    lock(&shared.0).done = true;
    let _ = stream.shutdown(Shutdown::Both); // ends the reading thread
    let _ = reader.join();
    if let Some(message) = ending.message() {
        println!("{}", note(message, colour));
    }
    Ok(ending)
}
// ANCHOR_END: interactive

/// The editing loop, from the server's first line to the end.
fn chat(editor: &mut DefaultEditor, stream: &TcpStream, shared: &Shared, colour: bool) -> Ending {
    let (live, changed) = &**shared;

    // No prompt before the server answers: until then nobody is listening, and the reading
    // thread says so after a second (the lesson of the sequential stage).
    {
        let mut live = lock(live);
        while !live.session.answered() && live.ended.is_none() {
            live = changed.wait(live).unwrap_or_else(|e| e.into_inner());
        }
    }

    // When the server closes while a line is being edited, the reading thread interrupts
    // the editor with SIGINT (rustyline turns it into `Interrupted`, and puts the terminal
    // back as it was). This handler makes that signal harmless when it lands between two
    // reads, where rustyline's own handler is not installed.
    let ignored = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, ignored) {
        println!("{}", note(&format!("cannot handle SIGINT: {e}"), colour));
    }

    let mut socket = stream;
    loop {
        let prompt = {
            let live = lock(live);
            if let Some(ending) = live.ended {
                return ending;
            }
            live.session.prompt()
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C, Ctrl-D, or the reading thread's signal: leave (politely, if we can).
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
                if let Some(ending) = lock(live).ended {
                    return ending;
                }
                "/quit".to_owned()
            }
            Err(e) => {
                println!("{}", note(&format!("the terminal failed: {e}"), colour));
                return Ending::Failed;
            }
        };
        if !line.is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        // A paste can hold several lines: each is a line of the protocol.
        for line in line.split('\n').map(|l| l.trim_end_matches('\r')) {
            if let Some(ending) = send(line, &mut socket, shared, colour) {
                return ending;
            }
        }
    }
}

/// Sends one typed line; `Some` when the session is over.
fn send(line: &str, socket: &mut &TcpStream, shared: &Shared, colour: bool) -> Option<Ending> {
    if line.is_empty() {
        return None; // the server would ignore it
    }
    if line.len() > chat_core::MAX_LINE {
        // The server would discard it and answer `! line too long`; say it before sending.
        let why = format!(
            "not sent: {} bytes, over the server's limit of {} (↑ brings it back to edit)",
            line.len(),
            chat_core::MAX_LINE
        );
        println!("{}", note(&why, colour));
        return None;
    }
    let (quit, awaits, answers) = {
        let mut live = lock(&shared.0);
        if let Some(ending) = live.ended {
            println!("{}", note("not sent: the connection is closed", colour));
            return Some(ending);
        }
        let quit = is_quit(line);
        live.goodbye |= quit;
        (quit, live.session.awaits_answer(line), live.answers)
    };
    if let Err(e) = socket.write_all(format!("{line}\n").as_bytes()) {
        println!("{}", note(&format!("sending failed: {e}"), colour));
        return Some(Ending::Failed);
    }
    if quit {
        let live = wait_for(shared, CLOSE_WAIT, |l| l.ended.is_some());
        return Some(live.ended.unwrap_or(Ending::NoClose));
    }
    if awaits {
        // So that the next prompt shows the new nick or room.
        drop(wait_for(shared, ANSWER_WAIT, |l| {
            l.answers > answers || l.ended.is_some()
        }));
    }
    None
}

/// Waits until `ready` holds or `timeout` passes; returns the state, locked.
fn wait_for<'a>(
    shared: &'a Shared,
    timeout: Duration,
    ready: impl Fn(&Live) -> bool,
) -> MutexGuard<'a, Live> {
    let (live, changed) = &**shared;
    let deadline = Instant::now() + timeout;
    let mut live = lock(live);
    while !ready(&live) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        live = changed
            .wait_timeout(live, deadline - now)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    live
}

/// The reading thread: follows and prints every server line, above the prompt.
fn read_and_print(
    socket: TcpStream,
    shared: &Shared,
    mut printer: impl rustyline::ExternalPrinter,
    colour: bool,
) {
    let (live, changed) = &**shared;
    let mut print = |text: String| {
        // Fails only if the terminal is gone; there is nobody left to tell.
        let _ = printer.print(format!("{text}\n"));
    };
    net::read_server(socket, |event| match event {
        FromServer::Line(line) => {
            {
                // Follow the line before printing it, so that a prompt waiting for this
                // answer is not held up by the printing.
                let mut live = lock(live);
                if live.session.observe(&line).answers() {
                    live.answers += 1;
                }
                changed.notify_all();
            }
            print(render(&line, colour));
        }
        FromServer::Silent => print(note(net::WAITING, colour)),
        FromServer::AnsweredAfter(after) => print(note(&net::answered_after(after), colour)),
        FromServer::Closed => {
            end(shared, None);
        }
        FromServer::Failed(e) => {
            let done = lock(live).done; // a failure after we shut the socket is ours
            if !done {
                print(note(
                    &format!("reading from the server failed: {e}"),
                    colour,
                ));
            }
            end(shared, Some(Ending::Failed));
        }
    });
}

/// Records that the connection ended (`how`, or as the session says) and wakes the editor.
fn end(shared: &Shared, how: Option<Ending>) {
    let (live, changed) = &**shared;
    {
        let mut live = lock(live);
        let ending = how.unwrap_or_else(|| live.session.ending(live.goodbye));
        live.ended.get_or_insert(ending);
        changed.notify_all();
    }
    interrupt_editor(live);
}

/// Makes a `readline` that is waiting for keys return, by raising SIGINT until the editing
/// thread says it is done (a signal that lands between two reads is ignored; see `chat`).
fn interrupt_editor(live: &Mutex<Live>) {
    for _ in 0..100 {
        if lock(live).done {
            return;
        }
        if signal_hook::low_level::raise(signal_hook::consts::SIGINT).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Locks a mutex, using the data as it is if another thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
