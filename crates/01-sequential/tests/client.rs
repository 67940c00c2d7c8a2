//! `chat-client` (its library: a test sees only its own package's binaries) against the real
//! `chat-sequential` binary over TCP: a second client, queued in the kernel while the
//! first is served, is told that it is connected and waiting, and is served afterwards.
//!
//! `cargo test -p chat-sequential --test client`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_client::script::{self, Options, Outcome};
use chat_client::{Ending, ANSWER_WAIT, WAITING};
use chat_testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_chat-sequential");

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

#[test]
fn a_second_client_is_told_it_waits_then_is_served() {
    let server = start();
    let mut first = Run::fed(&server);
    first.out.wait_contains("* welcome ");

    let started = Instant::now();
    let mut second = Run::fed(&server);
    second.send("/nick bob\n"); // queued with the connection, like nc would
    let err = second.err.wait_contains(WAITING);
    assert!(started.elapsed() >= ANSWER_WAIT, "said too early: {err:?}");
    assert_eq!(second.out.text(), "", "served while the first client is");

    // The first one leaves: the server turns to the second, which says it was answered.
    first.send("/quit\n");
    assert_eq!(first.outcome().ending, Ending::AsAsked);
    second.out.wait_contains("* you are now bob\n");
    assert!(
        second.out.text().starts_with("* welcome "),
        "{:?}",
        second.out.text()
    );
    second.err.wait_contains("the server answered after");

    second.input = None; // its input ends: it leaves after the quiet period
    let end = second.outcome();
    assert_eq!(end.ending, Ending::AsAsked, "{:?}", second.err.text());
    assert_eq!(end.session.nick(), Some("bob"));
    server.finish();
}
