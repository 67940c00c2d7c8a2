//! The server under test: a real stage binary started as a child process — or, for a stage
//! in `Mode::Cluster`, a private Redis and the nodes of a cluster on it.
//!
//! [`Server::start`] runs `BIN --addr 127.0.0.1:0 ...`, reads the one `listening on ADDR`
//! line from its stdout (with a timeout) and captures its stderr on a background thread.
//! Dropping a `Server` kills the process, and if the check is failing (the thread is
//! panicking) prints the command line and the captured stderr, so every failure shows
//! what the server logged.
//!
//! ## A cluster
//!
//! [`Server::start_cluster`] starts a [`Broker`] (a private `redis-server`), then N nodes of
//! the stage with `--redis redis://127.0.0.1:PORT`, and waits until each is subscribed on the
//! broker. The checks see one `Server`:
//!
//! - clients connect to the nodes in turn (round-robin: the first to node 0, the next to node
//!   1, ...), so a check's clients are spread over the cluster and every promise between two
//!   clients is a promise between two nodes;
//! - what concerns one client's connection acts on the node it is connected to:
//!   [`Server::socket_of`], [`Server::holds`];
//! - what concerns "the server" acts on every node: [`Server::memory`], [`Server::cpu_time`],
//!   [`Server::runnable_time`] and [`Server::open_fds`] are summed over the nodes; signals
//!   ([`Server::terminate`], [`Server::pause`], [`Server::resume`]) go to each node;
//!   [`Server::wait_exit`] waits for all; [`Server::finish`] asserts that all (and the broker)
//!   are alive and that none panicked;
//! - [`Server::addr`] is node 0's address (a check that connects by address reaches node 0).
//!
//! A check whose promise is about one process (SIGTERM, the connection limit, descriptors)
//! starts with `Options { one_node: true, .. }`: every client then connects to node 0, and
//! the process-level operations act on node 0 alone. Which checks do is decided, with the
//! reason, in `__conformance_tests!` (lib.rs) and in the checks themselves.
//!
//! Its own tests (start-up failures with stand-in shell scripts): `cargo test -p chat-testkit`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::cluster::Broker;
use crate::process::Process;
use crate::procfs;

/// How long a server may take to print `listening on ADDR` (debug build, busy machine).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Raises this test process's own descriptor limit to its hard limit (once): the heavy
/// checks open a thousand sockets.
pub fn raise_own_fd_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
}

/// Parses the server's first stdout line, `listening on ADDR`, into a loopback address.
pub fn parse_listening_line(line: &str) -> Result<SocketAddr, String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("expected `listening on ADDR` on stdout, got {line:?}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("`listening on ADDR`: {addr:?} is not an address: {e}"))?;
    if !addr.ip().is_loopback() || addr.port() == 0 {
        return Err(format!(
            "`listening on ADDR` must give the real loopback address and port, got {addr}"
        ));
    }
    Ok(addr)
}

/// A running stage binary, or the nodes of a cluster and their broker.
#[derive(Debug)]
pub struct Server {
    /// The processes: the one stage binary, or the nodes of a cluster in the order started.
    /// (Dropped first: nodes go before their broker.)
    nodes: Vec<Process>,
    /// A cluster's broker.
    broker: Option<Broker>,
    /// The node the next client connects to (round-robin).
    next: AtomicUsize,
    /// In a cluster: every client connects to node 0, and process-level operations act on
    /// node 0 alone.
    one_node: bool,
    /// Nodes a check stopped on purpose (killed, terminated): not expected alive at the end.
    retired: Mutex<HashSet<usize>>,
    /// The read timeout of the clients it connects ([`Server::connect`], [`Server::join`]).
    line_timeout: Duration,
}

impl Server {
    /// Starts `bin args...`, optionally with RLIMIT_NOFILE lowered to `nofile` (soft and
    /// hard, so the server cannot raise it back), and waits for `listening on ADDR`.
    #[track_caller]
    pub fn start(bin: &str, args: &[String], nofile: Option<u64>) -> Server {
        match Server::try_start(bin, args, nofile, STARTUP_TIMEOUT) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Server::start`] returning the failure instead of panicking.
    pub fn try_start(
        bin: &str,
        args: &[String],
        nofile: Option<u64>,
        timeout: Duration,
    ) -> Result<Server, String> {
        let process = Process::try_start(bin, args, nofile, timeout)?;
        Ok(Server::of(vec![process], None, false))
    }

    fn of(nodes: Vec<Process>, broker: Option<Broker>, one_node: bool) -> Server {
        Server {
            nodes,
            broker,
            next: AtomicUsize::new(0),
            one_node,
            retired: Mutex::new(HashSet::new()),
            line_timeout: crate::client::LINE_TIMEOUT,
        }
    }

    // ANCHOR: start_cluster
    /// Starts a private broker and `nodes` nodes of `bin args... --redis URL`, and waits until
    /// every node is subscribed on the broker. With `one_node`, clients all connect to node 0
    /// and process-level operations act on it alone (see the module's documentation).
    #[track_caller]
    pub fn start_cluster(
        bin: &str,
        args: &[String],
        nofile: Option<u64>,
        nodes: usize,
        one_node: bool,
    ) -> Server {
        let broker = Broker::start();
        let mut args = args.to_vec();
        args.extend(["--redis".to_string(), broker.url()]);
        let mut started = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            match Process::try_start(bin, &args, nofile, STARTUP_TIMEOUT) {
                Ok(node) => started.push(node),
                Err(e) => panic!("node {} of the cluster: {e}", started.len()),
            }
        }
        let server = Server::of(started, Some(broker), one_node);
        server.wait_for_nodes(nodes);
        server
    }
    // ANCHOR_END: start_cluster

    /// Waits until `n` connections are subscribed to the presence channel: every node has
    /// reached the broker.
    #[track_caller]
    fn wait_for_nodes(&self, n: usize) {
        let Some(broker) = &self.broker else { return };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let subscribed = broker.subscribers("chat:presence");
            if matches!(subscribed, Ok(k) if k >= n as i64) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{n} nodes started, but {subscribed:?} of them subscribed to chat:presence on \
                     the broker within {STARTUP_TIMEOUT:?}:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many processes: 1, or the nodes of a cluster.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// A cluster's broker (`None` for a server on its own).
    pub fn broker(&mut self) -> Option<&mut Broker> {
        self.broker.as_mut()
    }

    /// The nodes that process-level operations act on.
    fn targets(&self) -> std::ops::Range<usize> {
        if self.one_node {
            0..1
        } else {
            0..self.nodes.len()
        }
    }

    /// The address the server listens on (in a cluster: node 0's).
    pub fn addr(&self) -> SocketAddr {
        self.nodes[0].addr()
    }

    /// The address node `i` listens on.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr()
    }

    /// The server's process id (in a cluster: node 0's).
    pub fn pid(&self) -> u32 {
        self.nodes[0].pid()
    }

    /// The node `client` is connected to.
    #[track_caller]
    pub fn node_of(&self, client: &Client) -> usize {
        let port = client.peer_addr().port();
        self.nodes
            .iter()
            .position(|n| n.addr().port() == port)
            .unwrap_or_else(|| panic!("client {}: connected to no node of ours", client.label))
    }

    /// The server's socket for `client`'s connection, as `socket:[INODE]`, found in
    /// `/proc/net/tcp` by the client's port (in a cluster, on the client's node). Looking for
    /// this one socket, rather than counting the server's sockets, because a runtime may open
    /// sockets of its own at any time (tokio's signal driver does, after `listening on`).
    #[track_caller]
    pub fn socket_of(&self, client: &Client) -> String {
        self.nodes[self.node_of(client)].socket_of(client)
    }

    /// True while the server process (in a cluster: any node) holds `socket` open.
    pub fn holds(&self, socket: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.exited.is_none() && n.holds(socket))
    }

    /// The command line the server was started with (in a cluster: node 0's).
    pub fn command(&self) -> &str {
        self.nodes[0].command()
    }

    /// Sets the read timeout of the clients this server connects from now on (by default
    /// [`crate::LINE_TIMEOUT`]).
    pub fn set_line_timeout(&mut self, timeout: Duration) {
        self.line_timeout = timeout;
    }

    /// The read timeout of the clients this server connects.
    pub fn line_timeout(&self) -> Duration {
        self.line_timeout
    }

    /// A new connection (no line read yet), to the next node in turn.
    #[track_caller]
    pub fn connect(&self, label: &str) -> Client {
        self.connect_with(label, crate::client::Buffers::default())
    }

    /// A new connection with socket buffers set before `connect` (no line read yet).
    #[track_caller]
    pub fn connect_with(&self, label: &str, buffers: crate::client::Buffers) -> Client {
        let node = if self.one_node {
            0
        } else {
            self.next.fetch_add(1, Ordering::SeqCst) % self.nodes.len()
        };
        self.connect_to_with(node, label, buffers)
    }

    /// A new connection to node `i` (no line read yet).
    #[track_caller]
    pub fn connect_to(&self, i: usize, label: &str) -> Client {
        self.connect_to_with(i, label, crate::client::Buffers::default())
    }

    #[track_caller]
    fn connect_to_with(&self, i: usize, label: &str, buffers: crate::client::Buffers) -> Client {
        let mut c = Client::connect_with(label, self.nodes[i].addr(), buffers);
        c.set_timeout(self.line_timeout);
        c
    }

    /// A new connection whose welcome line has been read (its nick is known).
    #[track_caller]
    pub fn join(&self, label: &str) -> Client {
        let mut c = self.connect(label);
        c.expect_welcome();
        c
    }

    /// [`Server::join`] on node `i`.
    #[track_caller]
    pub fn join_on(&self, i: usize, label: &str) -> Client {
        let mut c = self.connect_to(i, label);
        c.expect_welcome();
        c
    }

    /// Memory figures now (see [`procfs::Memory`]); in a cluster, summed over the nodes.
    #[track_caller]
    pub fn memory(&self) -> procfs::Memory {
        self.targets().map(|i| self.nodes[i].memory()).fold(
            procfs::Memory {
                rss_kib: 0,
                hwm_kib: 0,
            },
            |a, b| procfs::Memory {
                rss_kib: a.rss_kib + b.rss_kib,
                hwm_kib: a.hwm_kib + b.hwm_kib,
            },
        )
    }

    /// CPU time used so far (user + system); in a cluster, summed over the nodes.
    #[track_caller]
    pub fn cpu_time(&self) -> Duration {
        self.targets().map(|i| self.nodes[i].cpu_time()).sum()
    }

    /// Time runnable so far (see [`procfs::runnable_time`]); `None` without schedstats. In a
    /// cluster, summed over the nodes.
    pub fn runnable_time(&self) -> Option<Duration> {
        self.targets().map(|i| self.nodes[i].runnable_time()).sum()
    }

    /// Number of open descriptors; in a cluster, summed over the nodes.
    #[track_caller]
    pub fn open_fds(&self) -> usize {
        self.targets().map(|i| self.nodes[i].open_fds()).sum()
    }

    /// Asserts that the process (in a cluster: every node not stopped on purpose, and the
    /// broker) is still running.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        let retired = self.retired.lock().expect("retired lock").clone();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !retired.contains(&i) {
                node.assert_alive();
            }
        }
        if let Some(broker) = &mut self.broker {
            assert!(
                broker.is_running(),
                "the cluster's broker died during the check"
            );
        }
    }

    /// Sends `signal` to the server process (in a cluster: to every node, or node 0 alone
    /// with `one_node`).
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        for i in self.targets() {
            self.nodes[i].signal(signal);
        }
    }

    /// Sends `signal` to node `i`; a node killed or terminated is not expected alive at the
    /// end of the check.
    #[track_caller]
    pub fn signal_node(&self, i: usize, signal: libc::c_int) {
        if matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) {
            self.retired.lock().expect("retired lock").insert(i);
        }
        self.nodes[i].signal(signal);
    }

    /// Sends SIGTERM.
    #[track_caller]
    pub fn terminate(&self) {
        for i in self.targets() {
            self.signal_node(i, libc::SIGTERM);
        }
    }

    /// Stops the server process (SIGSTOP) and waits until the kernel reports it stopped: from
    /// then on the kernel alone answers its sockets (handshakes, buffering), until
    /// [`Server::resume`]. A server dropped while stopped is killed all the same.
    #[track_caller]
    pub fn pause(&self) {
        for i in self.targets() {
            self.nodes[i].pause();
        }
    }

    /// Lets a server stopped by [`Server::pause`] run again (SIGCONT).
    #[track_caller]
    pub fn resume(&self) {
        for i in self.targets() {
            self.nodes[i].resume();
        }
    }

    /// Waits up to `timeout` for the process (in a cluster: every node it acts on) to exit;
    /// its status (the first failure among the nodes), or `None` if one still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut worst = None;
        for i in self.targets() {
            let status =
                self.nodes[i].wait_exit(deadline.saturating_duration_since(Instant::now()))?;
            if worst.is_none_or(|w: ExitStatus| w.success()) {
                worst = Some(status);
            }
        }
        worst
    }

    /// [`Server::wait_exit`] for node `i` alone.
    pub fn wait_exit_node(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        self.nodes[i].wait_exit(timeout)
    }

    /// After the process has exited: what it wrote to stdout after `listening on ADDR`.
    pub fn stdout_after_listening(&self) -> Vec<u8> {
        self.targets()
            .flat_map(|i| self.nodes[i].stdout_after_listening())
            .collect()
    }

    /// What the server has written to stderr so far (bounded; see `process.rs`). In a
    /// cluster, every node's, each under a heading.
    pub fn stderr_text(&self) -> String {
        if self.nodes.len() == 1 {
            return self.nodes[0].stderr_text();
        }
        (0..self.nodes.len())
            .map(|i| format!("--- node {i} ---\n{}", self.node_stderr(i)))
            .collect()
    }

    /// What node `i` has written to stderr so far.
    pub fn node_stderr(&self, i: usize) -> String {
        self.nodes[i].stderr_text()
    }

    /// How many panics the server (in a cluster: any node) reported on stderr so far, in all
    /// of it (not only the part kept for messages), with the first of them.
    pub fn panics(&self) -> (usize, Vec<String>) {
        let mut count = 0;
        let mut lines = Vec::new();
        for node in &self.nodes {
            let (n, l) = node.panics();
            count += n;
            lines.extend(l);
        }
        (count, lines)
    }

    /// Asserts that nothing in the server panicked (a thread-per-client server survives a
    /// panicking thread, but a panic on client input is a bug all the same). Reads all of
    /// stderr written so far; after the process is gone, all of it.
    #[track_caller]
    pub fn assert_no_panic(&self) {
        for node in &self.nodes {
            node.assert_no_panic();
        }
    }

    /// Ends a passing check: asserts that the server is still alive, kills it, and asserts
    /// that nothing in it panicked, in all it wrote to stderr until it died.
    #[track_caller]
    pub fn finish(mut self) {
        self.assert_alive();
        for node in &mut self.nodes {
            node.kill();
        }
        self.assert_no_panic();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn listening_lines() {
        assert_eq!(
            parse_listening_line("listening on 127.0.0.1:4242\n"),
            Ok("127.0.0.1:4242".parse().unwrap())
        );
        for bad in [
            "listening on 127.0.0.1:0",
            "listening on 0.0.0.0:7878",
            "Listening on 127.0.0.1:1",
            "listening on localhost:1",
            "127.0.0.1:1",
            "",
        ] {
            assert!(parse_listening_line(bad).is_err(), "{bad:?}");
        }
    }

    /// Writes an executable shell script standing in for a server.
    fn script(name: &str, body: &str) -> String {
        let dir = std::env::temp_dir().join(format!("chat-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "#!/bin/sh\n{body}").unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn a_wrong_first_line_fails_start_with_the_stderr() {
        let bin = script("wrong", "echo 'oops' >&2; echo 'hello'; exec sleep 30");
        let err = Server::try_start(&bin, &[], None, STARTUP_TIMEOUT).unwrap_err();
        assert!(err.contains("\"hello\"") && err.contains("oops"), "{err}");
    }

    #[test]
    fn a_crash_before_listening_reports_the_exit_status() {
        let bin = script("crash", "echo 'cannot bind' >&2; exit 3");
        let err = Server::try_start(&bin, &[], None, STARTUP_TIMEOUT).unwrap_err();
        assert!(
            err.contains("stdout closed") && err.contains("cannot bind"),
            "{err}"
        );
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let bin = script("silent", "exec sleep 30");
        let err = Server::try_start(&bin, &[], None, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("no `listening on ADDR` line"), "{err}");
    }

    #[test]
    fn a_good_start_is_read_and_the_process_is_killed_on_drop() {
        let bin = script(
            "good",
            "echo \"limit $(ulimit -n) args $*\" >&2; echo 'listening on 127.0.0.1:9'; exec sleep 30",
        );
        let args = vec!["--addr".to_string(), "127.0.0.1:0".to_string()];
        let mut server = Server::try_start(&bin, &args, Some(64), STARTUP_TIMEOUT).unwrap();
        assert_eq!(server.addr(), "127.0.0.1:9".parse().unwrap());
        server.assert_alive();
        let pid = server.pid();
        // Wait (bounded) for the script's stderr line to be captured.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.stderr_text().contains("limit") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            server
                .stderr_text()
                .contains("limit 64 args --addr 127.0.0.1:0"),
            "{}",
            server.stderr_text()
        );
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
