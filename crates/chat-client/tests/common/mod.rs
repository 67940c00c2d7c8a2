//! What the client's tests share: a fake server that the test scripts line by line, and the
//! `chat-client` binary run as a child with its output captured. Everything is on loopback,
//! port 0, and bounded in time: a child still running at the end of a test is killed.

#![allow(dead_code)] // each test file uses its own part of this

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one step of a test waits.
pub const STEP: Duration = Duration::from_secs(10);

/// The client binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_chat-client");

/// A listening socket standing in for a stage.
pub struct FakeServer {
    listener: TcpListener,
}

impl FakeServer {
    pub fn new() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeServer { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Waits (bounded) for the client to connect.
    #[track_caller]
    pub fn accept(&self) -> Peer {
        let deadline = Instant::now() + STEP;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(STEP)).unwrap();
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    return Peer { stream, reader };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the client did not connect");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// The fake server's end of one connection.
pub struct Peer {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Peer {
    /// Sends one line (the `\n` is added).
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The next line the client sent, without its `\n`; `None` when it ended its stream.
    #[track_caller]
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            Err(e) => panic!("reading from the client: {e} (got {line:?} so far)"),
        }
    }

    /// Closes the connection (both directions).
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Bytes a child wrote, filled by a thread; the flag is set at the end of the stream.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>, Arc<AtomicBool>);

impl Captured {
    /// Copies everything `from` yields until its end.
    pub fn from_reader(mut from: impl Read + Send + 'static) -> Captured {
        let captured = Captured::default();
        let sink = captured.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            sink.1.store(true, Ordering::SeqCst);
        });
        captured
    }

    /// Waits (bounded) for the end of the stream: after the child exits, so that all it
    /// wrote is here.
    #[track_caller]
    pub fn wait_end(&self) {
        let deadline = Instant::now() + STEP;
        while !self.1.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the output did not end");
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits (bounded) until the text so far satisfies `ready`; returns it.
    #[track_caller]
    pub fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let text = self.text();
            if ready(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "waited for {what}; got {text:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the text contains `needle`.
    #[track_caller]
    pub fn wait_contains(&self, needle: &str) -> String {
        self.wait_for(&format!("{needle:?}"), |t| t.contains(needle))
    }
}

/// `chat-client` running in script mode with piped standard streams.
pub struct Client {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Client {
    /// Starts `chat-client ARGS...`; its stdin stays open until [`Client::close_stdin`].
    pub fn start(args: &[&str]) -> Client {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Captured::from_reader(child.stdout.take().unwrap());
        let stderr = Captured::from_reader(child.stderr.take().unwrap());
        Client {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Writes to the client's standard input.
    pub fn type_in(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the client's standard input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the client to exit and for all its output.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        let status = wait_child(&mut self.child, STEP).unwrap_or_else(|| {
            panic!(
                "chat-client did not exit\nstdout: {:?}\nstderr: {:?}",
                self.stdout.text(),
                self.stderr.text()
            )
        });
        self.stdout.wait_end();
        self.stderr.wait_end();
        status
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
