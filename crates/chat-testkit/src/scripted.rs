//! `chat-client`'s script mode, run from a stage's own tests: a test sees only its own
//! package's binaries, so the stages that test the client against themselves (01 and 02) run
//! its library on a thread, with input the test feeds as it goes and output it can wait for.

use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_client::script::{self, Options, Outcome};

use crate::Server;

/// The longest any one step waits.
const STEP: Duration = Duration::from_secs(10);

/// Script input the test writes as it goes: lines sent on a channel; dropping the sender
/// is the end of the input.
#[derive(Debug)]
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

/// Output a test can look at while the run goes on.
#[derive(Debug, Clone, Default)]
pub struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Screen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    #[track_caller]
    pub fn wait_contains(&self, needle: &str) -> String {
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

/// One `chat-client` script run (its library, on a thread of its own) against a server.
#[derive(Debug)]
pub struct Run {
    /// `None` once the input has ended: set it to `None` to end the input.
    pub input: Option<mpsc::Sender<Vec<u8>>>,
    /// What the client printed to its standard output.
    pub out: Screen,
    /// What it printed to its standard error.
    pub err: Screen,
    done: mpsc::Receiver<Outcome>,
}

impl Run {
    /// Starts a run whose input the test feeds with [`Run::send`].
    pub fn fed(server: &Server) -> Run {
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
    pub fn script(server: &Server, lines: &str) -> Run {
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

    pub fn send(&self, lines: &str) {
        let input = self.input.as_ref().expect("a fed run whose input is open");
        input
            .send(lines.as_bytes().to_vec())
            .expect("the run's thread is alive");
    }

    /// Waits (bounded) for the run to end.
    #[track_caller]
    pub fn outcome(&mut self) -> Outcome {
        self.done.recv_timeout(STEP).unwrap_or_else(|_| {
            panic!(
                "the run did not end\nout: {:?}\nerr: {:?}",
                self.out.text(),
                self.err.text()
            )
        })
    }
}
