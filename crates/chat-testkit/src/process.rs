//! One process under test: a stage binary started as a child process, its stdout's first line
//! read, its stderr captured on a background thread (bounded, with every panic found in all of
//! it). [`crate::Server`] is one of them, or the nodes of a cluster.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procfs;
use crate::server::{parse_listening_line, raise_own_fd_limit, STARTUP_TIMEOUT};

/// How much of the server's stderr is kept for messages: the first `HEAD` bytes (start-up
/// errors) and the last `TAIL` bytes (what happened just before the failure). Panics are
/// looked for in *all* of it, whatever is kept (see [`Captured::push`]).
const HEAD: usize = 16 * 1024;
/// See [`HEAD`].
const TAIL: usize = 64 * 1024;

/// What marks a panic in a Rust program's stderr (`thread 'x' panicked at src/..`).
const PANIC_MARK: &[u8] = b"panicked at";

/// At most this many panic lines are kept, with [`PANIC_CONTEXT`] bytes around each.
const MAX_PANICS: usize = 4;
/// See [`MAX_PANICS`].
const PANIC_CONTEXT: usize = 300;

/// A bounded copy of what the server wrote to stderr, and every panic in all of it.
#[derive(Debug, Default)]
struct Captured {
    /// The first `HEAD` bytes.
    head: Vec<u8>,
    /// The last `TAIL` bytes after the head.
    tail: VecDeque<u8>,
    /// How many bytes between head and tail were dropped.
    dropped: usize,
    /// How many times [`PANIC_MARK`] occurred, in all the bytes ever pushed.
    panics: usize,
    /// The first [`MAX_PANICS`] panic marks with some context (they may lie in the dropped
    /// middle).
    panic_lines: Vec<String>,
    /// The last [`PANIC_CONTEXT`] bytes pushed, so that a mark split between two reads of
    /// the pipe is found too, and shown with what came before it.
    carry: Vec<u8>,
}

impl Captured {
    /// Appends a chunk, keeping the head and a bounded tail, and counts the panic marks in
    /// it (including one that began in the previous chunk).
    fn push(&mut self, chunk: &[u8]) {
        let mut window = std::mem::take(&mut self.carry);
        // Marks that lie wholly in the carried bytes were counted with the previous chunk.
        let mut from = window.len().saturating_sub(PANIC_MARK.len() - 1);
        window.extend_from_slice(chunk);
        while let Some(pos) = window[from..]
            .windows(PANIC_MARK.len())
            .position(|w| w == PANIC_MARK)
        {
            let at = from + pos;
            self.panics += 1;
            if self.panic_lines.len() < MAX_PANICS {
                let begin = window[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                    .max(at.saturating_sub(PANIC_CONTEXT));
                let end = window[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(window.len(), |i| at + i)
                    .min(at + PANIC_CONTEXT);
                self.panic_lines
                    .push(String::from_utf8_lossy(&window[begin..end]).into_owned());
            }
            from = at + PANIC_MARK.len();
        }
        let keep = PANIC_CONTEXT.min(window.len());
        self.carry = window[window.len() - keep..].to_vec();

        let mut bytes = chunk;
        let room = HEAD.saturating_sub(self.head.len());
        let (h, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(h);
        bytes = rest;
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
        self.dropped += excess;
    }

    /// All that was kept, as text, with a marker where bytes were dropped (and the panics
    /// found there).
    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!(
                "\n[... {} bytes of stderr left out ...]\n",
                self.dropped
            ));
            if self.panics > 0 {
                s.push_str(&format!(
                    "[{} panic(s) in all of stderr; the first ones:]\n{}\n[...]\n",
                    self.panics,
                    self.panic_lines.join("\n")
                ));
            }
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }
}

/// One running stage binary: a server, or one node of a cluster.
#[derive(Debug)]
pub(crate) struct Process {
    /// The command line, for messages.
    command: String,
    /// The child process.
    child: Child,
    /// Where it listens (from `listening on ADDR`).
    addr: SocketAddr,
    /// What it has written to stderr so far (filled by a background thread).
    stderr: Arc<Mutex<Captured>>,
    /// Closed by the stderr thread when stderr reaches EOF.
    stderr_done: Receiver<()>,
    /// Whatever it wrote to stdout after the `listening on` line (should be nothing).
    stdout_rest: Arc<Mutex<Vec<u8>>>,
    /// Closed by the stdout thread when stdout reaches EOF.
    stdout_done: Receiver<()>,
    /// Its exit status, once we have reaped it.
    pub(crate) exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `bin args...`, optionally with RLIMIT_NOFILE lowered to `nofile` (soft and
    /// hard, so the server cannot raise it back), and waits (up to `timeout`) for
    /// `listening on ADDR`.
    pub(crate) fn try_start(
        bin: &str,
        args: &[String],
        nofile: Option<u64>,
        timeout: Duration,
    ) -> Result<Process, String> {
        raise_own_fd_limit();
        let command = std::iter::once(bin)
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = nofile {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: the closure runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed; setrlimit is a plain system call and
            // the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the server `{command}`: {e}"))?;

        // stderr: copy into a bounded buffer until EOF, on its own thread so the pipe never
        // fills up and blocks the server.
        let stderr = Arc::new(Mutex::new(Captured::default()));
        let (stderr_tx, stderr_done) = mpsc::channel::<()>();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().expect("stderr buffer lock").push(&buf[..n]);
                }
                drop(stderr_tx);
            });
        }

        // stdout: hand the first line over, then keep whatever else comes (there should
        // be nothing; the SIGTERM check looks).
        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, line_rx) = mpsc::channel::<std::io::Result<String>>();
        let (stdout_tx, stdout_done) = mpsc::channel::<()>();
        if let Some(pipe) = child.stdout.take() {
            let rest = Arc::clone(&stdout_rest);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut first = String::new();
                let got = reader
                    .by_ref()
                    .take(4096)
                    .read_line(&mut first)
                    .map(|_| first);
                let _ = line_tx.send(got);
                let mut buf = Vec::new();
                let _ = reader.take(1 << 20).read_to_end(&mut buf);
                rest.lock().expect("stdout buffer lock").extend(buf);
                drop(stdout_tx);
            });
        }

        let mut server = Process {
            command,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stderr_done,
            stdout_rest,
            stdout_done,
            exited: None,
        };
        let first = match line_rx.recv_timeout(timeout) {
            Ok(Ok(line)) if line.is_empty() => Err("stdout closed".to_string()),
            Ok(Ok(line)) => parse_listening_line(&line),
            Ok(Err(e)) => Err(format!("reading stdout: {e}")),
            Err(_) => Err(format!("no `listening on ADDR` line within {timeout:?}")),
        };
        match first {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(why) => {
                server.kill();
                let status = server
                    .exited
                    .map_or_else(|| "exit status unknown".to_string(), |s| s.to_string());
                Err(format!(
                    "the server `{}` did not start: {why} ({status})\n\
                     --- server stderr ---\n{}--- end of server stderr ---",
                    server.command,
                    server.stderr_text()
                ))
            }
        }
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's socket for `client`'s connection, as `socket:[INODE]`, found in
    /// `/proc/net/tcp` by the client's port. Looking for this one socket, rather than counting
    /// the server's sockets, because a runtime may open sockets of its own at any time
    /// (tokio's signal driver does, after `listening on`).
    #[track_caller]
    pub(crate) fn socket_of(&self, client: &crate::Client) -> String {
        let (local_port, peer_port) = (self.addr().port(), client.local_addr().port());
        self.socket_by_ports(local_port, peer_port, &client.label)
    }

    /// The socket (`socket:[INODE]`) between our port `local_port` and a client's `peer_port`.
    #[track_caller]
    fn socket_by_ports(&self, local_port: u16, peer_port: u16, label: &str) -> String {
        let table = std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_else(|e| panic!("/proc/net/tcp: {e}"));
        table
            .lines()
            .skip(1)
            .find_map(|row| {
                let cols: Vec<&str> = row.split_whitespace().collect();
                let (local, remote, inode) = (cols.get(1)?, cols.get(2)?, cols.get(9)?);
                (local.ends_with(&format!(":{local_port:04X}"))
                    && remote.ends_with(&format!(":{peer_port:04X}"))
                    && *inode != "0")
                    .then(|| format!("socket:[{inode}]"))
            })
            .unwrap_or_else(|| panic!("client {label}: no server socket for it in /proc/net/tcp"))
    }

    /// True while the server process holds `socket` (from [`Server::socket_of`]) open.
    pub(crate) fn holds(&self, socket: &str) -> bool {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .any(|target| target.as_os_str() == socket)
    }

    /// The command line the server was started with.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Memory figures now (see [`procfs::Memory`]).
    #[track_caller]
    pub(crate) fn memory(&self) -> procfs::Memory {
        procfs::memory(self.pid()).unwrap_or_else(|e| panic!("server memory: {e}"))
    }

    /// CPU time used so far (user + system).
    #[track_caller]
    pub(crate) fn cpu_time(&self) -> Duration {
        procfs::cpu_time(self.pid()).unwrap_or_else(|e| panic!("server CPU time: {e}"))
    }

    /// Time runnable so far (see [`procfs::runnable_time`]); `None` without schedstats.
    pub(crate) fn runnable_time(&self) -> Option<Duration> {
        procfs::runnable_time(self.pid())
    }

    /// Number of open descriptors.
    #[track_caller]
    pub(crate) fn open_fds(&self) -> usize {
        procfs::open_fds(self.pid()).unwrap_or_else(|e| panic!("server descriptors: {e}"))
    }

    /// Asserts that the process is still running.
    #[track_caller]
    pub(crate) fn assert_alive(&mut self) {
        if let Some(status) = self.exited {
            panic!("the server had already exited ({status})");
        }
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                self.exited = Some(status);
                panic!("the server died during the check: {status}");
            }
            Err(e) => panic!("cannot query the server process: {e}"),
        }
    }

    /// Sends `signal` to the server process.
    #[track_caller]
    pub(crate) fn signal(&self, signal: libc::c_int) {
        assert!(
            self.exited.is_none(),
            "cannot signal the server: it has exited"
        );
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits in pid_t");
        // SAFETY: kill has no memory-safety preconditions; pid is our own live child
        // (not reaped yet, so the pid cannot have been reused).
        if unsafe { libc::kill(pid, signal) } != 0 {
            panic!("kill({signal}): {}", std::io::Error::last_os_error());
        }
    }

    /// Stops the server process (SIGSTOP) and waits until the kernel reports it stopped: from
    /// then on the kernel alone answers its sockets (handshakes, buffering), until
    /// [`Server::resume`]. A server dropped while stopped is killed all the same.
    #[track_caller]
    pub(crate) fn pause(&self) {
        self.signal(libc::SIGSTOP);
        self.wait_state(true);
    }

    /// Lets a server stopped by [`Server::pause`] run again (SIGCONT).
    #[track_caller]
    pub(crate) fn resume(&self) {
        self.signal(libc::SIGCONT);
        self.wait_state(false);
    }

    /// Waits (bounded) until the process is stopped (`T` in `/proc/PID/stat`), or no longer.
    #[track_caller]
    fn wait_state(&self, stopped: bool) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let state = procfs::state(self.pid()).unwrap_or_else(|e| panic!("server state: {e}"));
            if (state == 'T') == stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server process is in state {state:?} {STARTUP_TIMEOUT:?} after \
                 {}",
                if stopped { "SIGSTOP" } else { "SIGCONT" }
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it is
    /// still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break,
            }
        }
        self.exited
    }

    /// After the process has exited: what it wrote to stdout after `listening on ADDR`.
    pub(crate) fn stdout_after_listening(&self) -> Vec<u8> {
        // The pipe reaches EOF when the process is gone; wait a little for the thread.
        let _ = self.stdout_done.recv_timeout(Duration::from_secs(2));
        self.stdout_rest.lock().expect("stdout buffer lock").clone()
    }

    /// What the server has written to stderr so far (bounded; see `HEAD`/`TAIL`).
    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr buffer lock").text()
    }

    /// How many panics the server reported on stderr so far, in all of it (not only the
    /// part kept for messages), with the first of them.
    pub(crate) fn panics(&self) -> (usize, Vec<String>) {
        let captured = self.stderr.lock().expect("stderr buffer lock");
        (captured.panics, captured.panic_lines.clone())
    }

    /// Asserts that nothing in the server panicked (a thread-per-client server survives a
    /// panicking thread, but a panic on client input is a bug all the same). Reads all of
    /// stderr written so far; after the process is gone, all of it.
    #[track_caller]
    pub(crate) fn assert_no_panic(&self) {
        if self.exited.is_some() {
            // The pipe reaches EOF when the process is gone: wait (briefly) for the thread.
            let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        }
        let (count, lines) = self.panics();
        if count > 0 {
            panic!(
                "the server panicked {count} time(s) (see its stderr below), first:\n  {}",
                lines.join("\n  ")
            );
        }
    }

    /// Kills the process (if it still runs), reaps it and waits briefly for its stderr.
    pub(crate) fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- server `{}` (pid {}) stderr ---\n{}--- end of server stderr ---",
                self.command,
                self.child.id(),
                self.stderr_text()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_found_in_all_of_stderr_even_split_across_reads() {
        let mut c = Captured::default();
        c.push(&vec![b'h'; HEAD]);
        c.push(&vec![b'm'; TAIL]);
        c.push(b"\nthread 'main' pan");
        c.push(b"icked at src/lib.rs:1:1:\nboom\n");
        c.push(&vec![b'z'; 2 * TAIL]);
        assert_eq!(c.panics, 1);
        assert!(
            c.panic_lines[0].starts_with("thread 'main' panicked at src/lib.rs"),
            "{:?}",
            c.panic_lines
        );
        assert!(
            !c.tail.iter().any(|&b| b == b'p'),
            "the panic is out of the tail"
        );
        assert!(c.text().contains("1 panic(s)"));
    }

    #[test]
    fn captured_stderr_keeps_head_and_tail() {
        let mut c = Captured::default();
        c.push(&vec![b'h'; HEAD]);
        c.push(&vec![b'm'; 3 * TAIL]);
        c.push(b"the end");
        let text = c.text();
        assert!(text.starts_with("hhh"));
        assert!(text.ends_with("the end"));
        assert!(text.contains(&format!("{} bytes of stderr left out", 2 * TAIL + 7)));
    }
}
