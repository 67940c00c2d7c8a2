//! Starting a server process for a run, and stopping it again.
//!
//! Every stage prints exactly one line on standard output once it listens,
//! `listening on ADDR` (the protocol's contract), so a server started on port
//! 0 tells us where it is. Peers print their own words (smol's example says
//! `Listening on 127.0.0.1:6000`), so the line is matched without regard to
//! case, and a few lines before it are allowed.
//!
//! Used by `compare` for every (server, scenario), and by the stages' own
//! tests that drive their binary with the generator (for example
//! `crates/02-threads/tests/bench.rs`).

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::result::Exit;

/// How long a server may take to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM (the protocol's
/// shutdown grace is 3 s) before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines a server may print before its `listening on` line.
const MAX_LINES_BEFORE: usize = 20;

/// The address in a `listening on ADDR` line (any case), if it is one.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    const PREFIX: &str = "listening on ";
    let line = line.trim();
    let head = line.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    line[PREFIX.len()..].trim().parse().ok()
}

/// A running server the generator started.
#[derive(Debug)]
pub struct Server {
    /// The process; `None` once it was reaped.
    child: Option<Child>,
    /// The address it printed.
    pub addr: SocketAddr,
}

impl Server {
    /// Spawns `cmd` with its standard output piped (its other streams are
    /// the caller's to set) and waits up to [`START_TIMEOUT`] for its
    /// `listening on ADDR` line.
    pub fn start(mut cmd: Command) -> io::Result<Server> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = cmd.spawn()?;
        let Some(stdout) = child.stdout.take() else {
            return Err(io::Error::other("the server's stdout was not piped"));
        };
        let (tx, rx) = mpsc::channel();
        // A reader thread, so that a server that never prints cannot hang
        // us. It keeps draining stdout afterwards, in large reads, so that a
        // server that prints a line per message (smol's example does) never
        // blocks on a full pipe and costs us little.
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = String::new();
            for _ in 0..MAX_LINES_BEFORE {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Some(addr) = parse_listening(&line) {
                    let _ = tx.send(addr);
                    break;
                }
            }
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Ok(Server {
                child: Some(child),
                addr,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other(format!(
                    "no `listening on ADDR` line within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    // ANCHOR: stop
    /// Sends SIGTERM and waits up to [`STOP_GRACE`] for a clean exit, then SIGKILLs.
    pub fn stop(&mut self) -> Exit {
        let start = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Exit::default();
        };
        if let Ok(Some(status)) = child.try_wait() {
            // It died during the run: report that as it is.
            return Exit {
                in_time: false,
                code: status.code(),
                seconds: 0.0,
            };
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        while start.elapsed() < STOP_GRACE {
            if let Ok(Some(status)) = child.try_wait() {
                return Exit {
                    in_time: status.code() == Some(0),
                    code: status.code(),
                    seconds: start.elapsed().as_secs_f64(),
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let status = child.wait().ok();
        Exit {
            in_time: false,
            code: status.and_then(|s| s.code()),
            seconds: start.elapsed().as_secs_f64(),
        }
    }
    // ANCHOR_END: stop
}

impl Drop for Server {
    /// A server nobody stopped (a panicking test, say) is killed, never left behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_in_any_case() {
        let addr: SocketAddr = "127.0.0.1:7878".parse().expect("literal address");
        assert_eq!(parse_listening("listening on 127.0.0.1:7878\n"), Some(addr));
        assert_eq!(parse_listening("Listening on 127.0.0.1:7878"), Some(addr));
        assert_eq!(parse_listening("listening on somewhere"), None);
        assert_eq!(parse_listening("Start a chat client now!"), None);
        assert_eq!(parse_listening("é"), None, "no panic on a char boundary");
    }

    #[test]
    fn a_server_that_never_listens_is_an_error_not_a_hang() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exit 0"]);
        let started = Instant::now();
        assert!(Server::start(cmd).is_err());
        assert!(started.elapsed() < START_TIMEOUT);
    }
}
