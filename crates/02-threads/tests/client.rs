//! `chat-client` (its library: a test sees only its own package's binaries) against the real
//! `chat-threads` binary over TCP: two scripted clients chat, and the client's idea of its
//! nick and room follows the server's answers.
//!
//! `cargo test -p chat-threads --test client`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_client::script::{self, Options, Outcome};
use chat_client::Ending;
use chat_testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_chat-threads");

/// The longest any one step waits.
const STEP: Duration = Duration::from_secs(10);

fn start() -> Server {
    Server::start(BIN, &["--addr".into(), "127.0.0.1:0".into()], None)
}

/// Script input the test writes as it goes: lines sent on a channel; dropping the sender
/// is the end of the input.
struct Feed {
    lines: mpsc::Receiver<Vec<u8>>,
    pending: Cursor<Vec<u8>>,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.pending.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match self.lines.recv() {
                Ok(bytes) => self.pending = Cursor::new(bytes),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// Output the test can look at while the run goes on.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    #[track_caller]
    fn wait_contains(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {needle:?}; got {text:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One client's script run on a thread of its own.
struct Run {
    /// `None` once the input has ended.
    input: Option<mpsc::Sender<Vec<u8>>>,
    out: Screen,
    err: Screen,
    done: mpsc::Receiver<Outcome>,
}

impl Run {
    /// Starts a run whose input the test feeds with [`Run::send`].
    fn fed(server: &Server) -> Run {
        let (tx, lines) = mpsc::channel();
        let feed = Feed {
            lines,
            pending: Cursor::new(Vec::new()),
        };
        let mut run = Run::with_input(server, BufReader::new(feed));
        run.input = Some(tx);
        run
    }

    /// Starts a run of a fixed script.
    fn script(server: &Server, lines: &str) -> Run {
        Run::with_input(server, Cursor::new(lines.as_bytes().to_vec()))
    }

    fn with_input(server: &Server, input: impl io::BufRead + Send + 'static) -> Run {
        let (out, err) = (Screen::default(), Screen::default());
        let (tx, done) = mpsc::channel();
        let addr = server.addr().to_string();
        let (o, e) = (out.clone(), err.clone());
        thread::spawn(move || {
            let options = Options {
                quiet: Duration::from_millis(300),
                colour: false,
            };
            let _ = tx.send(script::connect_and_run(&addr, input, o, e, &options));
        });
        Run {
            input: None,
            out,
            err,
            done,
        }
    }

    fn send(&self, lines: &str) {
        let input = self.input.as_ref().expect("a fed run whose input is open");
        input.send(lines.as_bytes().to_vec()).unwrap();
    }

    /// Waits (bounded) for the run to end.
    #[track_caller]
    fn outcome(&mut self) -> Outcome {
        self.done.recv_timeout(STEP).unwrap_or_else(|_| {
            panic!(
                "the run did not end\nout: {:?}\nerr: {:?}",
                self.out.text(),
                self.err.text()
            )
        })
    }
}

/// Asserts that `needles` occur in `text` in this order.
#[track_caller]
fn in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(i) => from += i + needle.len(),
            None => panic!("{needle:?} missing (or out of order) in {text:?}"),
        }
    }
}

#[test]
fn two_scripted_clients_chat() {
    let server = start();
    let mut alice = Run::fed(&server);
    alice.send("/nick alice\n/join rust\n");
    alice.out.wait_contains("* you joined rust (1 members)");

    let mut bob = Run::script(
        &server,
        "/nick bob\n/join rust\nhello alice\n/msg alice psst\n/quit see you\n",
    );
    let bob_end = bob.outcome();
    assert_eq!(bob_end.ending, Ending::AsAsked, "{:?}", bob.err.text());
    let bob_out = bob.out.text();
    in_order(
        &bob_out,
        &[
            "* welcome ",
            "* you are now bob\n",
            "* you joined rust (2 members)\n",
            "* bye\n",
        ],
    );
    assert!(
        !bob_out.contains("<bob>"),
        "no echo of one's own lines: {bob_out:?}"
    );
    assert_eq!(bob.err.text(), "");
    assert_eq!(bob_end.session.prompt(), "bob@rust> ");

    let seen = alice.out.wait_contains("* bob left rust (see you)");
    in_order(
        &seen,
        &[
            "* you are now alice\n",
            "* you joined rust (1 members)\n",
            "* bob joined rust\n",
            "<bob> hello alice\n",
            "[bob] psst\n",
            "* bob left rust (see you)\n",
        ],
    );

    alice.send("/quit\n");
    let alice_end = alice.outcome();
    assert_eq!(alice_end.ending, Ending::AsAsked, "{:?}", alice.err.text());
    assert_eq!(alice_end.session.prompt(), "alice@rust> ");
    assert!(
        alice.out.text().ends_with("* bye\n"),
        "{:?}",
        alice.out.text()
    );
    server.finish();
}

#[test]
fn the_state_follows_the_servers_answers_only() {
    let server = start();
    let mut holder = Run::fed(&server);
    holder.send("/nick alice\n");
    holder.out.wait_contains("* you are now alice");

    // ALICE is taken (nicks are unique regardless of case): the nick must not change.
    let mut taken = Run::script(&server, "/nick ALICE\n/join den\n");
    let end = taken.outcome();
    assert!(
        taken.out.text().contains("! nick taken: ALICE"),
        "{:?}",
        taken.out.text()
    );
    let nick = end.session.nick().unwrap().to_owned();
    assert!(nick.starts_with("guest"), "{nick}");
    assert_eq!(end.session.prompt(), format!("{nick}@den> "));
    // Input ended without /quit: a half-close after the quiet period, a normal goodbye.
    assert_eq!(end.ending, Ending::AsAsked);

    // Renamed twice and moved: the last answers win.
    let mut renamed = Run::script(&server, "/nick carol\n/join den\n/nick dave\n");
    let end = renamed.outcome();
    assert_eq!(end.session.prompt(), "dave@den> ");
    assert_eq!(
        (end.session.nick(), end.session.room()),
        (Some("dave"), Some("den"))
    );
    assert_eq!(end.ending, Ending::AsAsked);

    holder.input = None; // the end of its input: it leaves after its quiet period
    assert_eq!(holder.outcome().ending, Ending::AsAsked);
    server.finish();
}
