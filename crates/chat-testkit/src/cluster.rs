//! The broker of a cluster check: a private `redis-server`, started for one check and killed
//! at its end.
//!
//! A cluster check (the suite in `Mode::Cluster`, and the checks in [`crate::checks::cluster`])
//! starts its own Redis on a free loopback port, with nothing kept on disk (`--save ''`,
//! `--appendonly no`, `--dir` a fresh temporary directory, removed at the end), then the nodes
//! with `--redis redis://127.0.0.1:PORT`. It can stop Redis and start it again on the same port
//! (the broker-outage check), and ask it things with a few words of RESP ([`Broker::command`]).
//!
//! `redis-server` must be on `PATH` (Debian's package `redis-server`; `.ci/run` installs it).
//! If it cannot be started, the check fails and says so: a cluster check never passes without
//! a broker.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long Redis may take to answer its first `PING`.
pub const BROKER_STARTUP: Duration = Duration::from_secs(10);

/// A reply of Redis, as much of RESP2 as the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:3`.
    Int(i64),
    /// `$5 hello`, or `$-1` (nil: `None`).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `*-1`.
    Array(Vec<Reply>),
}

/// A private `redis-server` for one check.
#[derive(Debug)]
pub struct Broker {
    /// The process, while it runs.
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    port: u16,
    /// Its working directory (and log file), removed at the end.
    dir: PathBuf,
}

impl Broker {
    /// Starts `redis-server` on a free port and waits until it answers; panics with a clear
    /// message if it cannot.
    #[track_caller]
    pub fn start() -> Broker {
        match Broker::try_start() {
            Ok(broker) => broker,
            Err(e) => panic!(
                "cannot start the cluster's broker: {e}\n(the cluster checks need `redis-server` \
                 on PATH: `apt-get install -y redis-server`)"
            ),
        }
    }

    /// [`Broker::start`] returning the failure.
    pub fn try_start() -> Result<Broker, String> {
        // A free port: bind port 0, read it, close. (Another process could take it meanwhile;
        // on loopback in a test run, that is rare enough.)
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-testkit-redis-{}-{}-{port}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut broker = Broker {
            child: None,
            port,
            dir,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// Starts the process (again) on the same port, and waits for its `PONG`.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + BROKER_STARTUP;
        loop {
            match self.command(&["PING"]) {
                Ok(Reply::Status(pong)) if pong == "PONG" => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    return Err(format!(
                        "redis-server on port {} did not answer PING within {BROKER_STARTUP:?} \
                         ({other:?}; exit status {exited:?}); its log:\n{}",
                        self.port,
                        self.log()
                    ));
                }
            }
        }
    }

    /// `redis://127.0.0.1:PORT`, for the nodes' `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What Redis logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills Redis (SIGKILL): every connection to it ends, and everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again, empty, on the same port.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("restarting the broker: {e}");
        }
    }

    /// Sends one command and reads its reply (bounded by a few seconds).
    pub fn command(&self, args: &[&str]) -> io::Result<Reply> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut packed = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            packed.extend(format!("${}\r\n", arg.len()).bytes());
            packed.extend(arg.bytes());
            packed.extend(b"\r\n");
        }
        (&stream).write_all(&packed)?;
        read_reply(&mut BufReader::new(stream))
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`).
    pub fn subscribers(&self, channel: &str) -> io::Result<i64> {
        match self.command(&["PUBSUB", "NUMSUB", channel])? {
            Reply::Array(items) => match items.as_slice() {
                [_, Reply::Int(n)] => Ok(*n),
                other => Err(io::Error::other(format!("PUBSUB NUMSUB: {other:?}"))),
            },
            other => Err(io::Error::other(format!("PUBSUB NUMSUB: {other:?}"))),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("RESP: {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    let number = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Ok(len) => {
                let mut bulk = vec![0; len + 2];
                r.read_exact(&mut bulk)?;
                bulk.truncate(len);
                Reply::Bulk(Some(bulk))
            }
            Err(_) => Reply::Bulk(None),
        },
        "*" => {
            let n = number()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read() {
        let mut wire = &b"*2\r\n$13\r\nchat:presence\r\n:3\r\n+OK\r\n$-1\r\n-ERR no\r\n"[..];
        assert_eq!(
            read_reply(&mut wire).unwrap(),
            Reply::Array(vec![
                Reply::Bulk(Some(b"chat:presence".to_vec())),
                Reply::Int(3)
            ])
        );
        assert_eq!(read_reply(&mut wire).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut wire).unwrap(), Reply::Bulk(None));
        assert_eq!(
            read_reply(&mut wire).unwrap(),
            Reply::Error("ERR no".into())
        );
    }
}
