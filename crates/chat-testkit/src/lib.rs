//! # chat-testkit: one conformance suite for every stage
//!
//! Every stage of c10k-chat is judged the same way: its **real binary** is started on
//! port 0, and test clients talk to it over loopback TCP, line by line, exactly as the
//! specification (`book/src/specification.md`) says. The kit knows nothing of `chat-core`:
//! it tests the protocol text, and takes its numbers (`MAX_LINE`, `SLOW_GRACE`,
//! `CLOSE_GRACE`, `SHUTDOWN_GRACE`, the smallest `--outbox-bytes`, the list cap, the
//! backlog) from the specification, so a bug shared by the core and a stage cannot hide.
//!
//! The suite is an adversary: for every promise of the specification there is a check that
//! would break it — bursts written in one write, pipelined commands, many senders at the same
//! instant, clients that never read, talk after `/quit`, half-close at once, stop the server
//! mid-stream (SIGSTOP) or shut it down (SIGTERM) with clients that make it hard.
//!
//! A stage adds one file, `tests/conformance.rs`, with one macro call:
//!
//! ```text
//! chat_testkit::conformance!(bin = env!("CARGO_BIN_EXE_chat-threads"), mode = concurrent);
//! chat_testkit::conformance!(bin = env!("CARGO_BIN_EXE_chat-sequential"), mode = sequential);
//! chat_testkit::conformance!(
//!     bin = env!("CARGO_BIN_EXE_chat-threadpool"),
//!     mode = pool(flag = "--threads"),
//! );
//! // Extra flags for every server start, and a module name to call the macro twice:
//! chat_testkit::conformance!(
//!     bin = env!("CARGO_BIN_EXE_chat-tokio"),
//!     mode = concurrent,
//!     args = ["--flavor", "current-thread"],
//!     name = current_thread,
//! );
//! // The stage's bound on the memory an idle client costs: generates the 2,000-idle-clients
//! // check (stages that cannot hold 2,000 clients leave it out).
//! chat_testkit::conformance!(
//!     bin = env!("CARGO_BIN_EXE_chat-epoll"),
//!     mode = concurrent,
//!     idle_bytes_per_client = 4096,
//! );
//! // A concurrent stage with a hard limit of its own below `--max-clients` (select: 1000):
//! // the connect burst of 1,500 expects 1000 welcomed and 500 refused with `! server full`.
//! chat_testkit::conformance!(
//!     bin = env!("CARGO_BIN_EXE_chat-select"),
//!     mode = concurrent,
//!     max_clients = 1000,
//! );
//! // A cluster: each check starts a private `redis-server` and 3 nodes of the binary on it
//! // (`--redis redis://127.0.0.1:PORT`), and spreads its clients over them.
//! chat_testkit::conformance!(
//!     bin = env!("CARGO_BIN_EXE_chat-cluster"),
//!     mode = concurrent,
//!     cluster = 3,
//! );
//! ```
//!
//! and runs it with `cargo test -p chat-threads --test conformance`. The macro expands to
//! one `#[test]` per check (see [`checks`] for what each proves), so a failure names its
//! check; the failure message says which client expected which line and what it got
//! instead, and the server's stderr is printed below it.
//!
//! The mode says what the stage promises:
//! - `sequential`: one client at a time; the next is served when the first leaves.
//! - `pool(flag = "--threads")`: `--threads N` workers serve N clients at once. Checks
//!   start it with enough workers for their clients; the limit check starts it with 2.
//! - `concurrent`: any number of clients at once.
//!
//! Which checks each mode gets (a check that cannot apply to a mode is not generated for it,
//! and each mode's limit is itself a check):
//!
//! - **every mode** — one client at a time suffices: `welcome_line`,
//!   `message_alone_not_echoed`, `crlf_and_empty_lines`, `nick_command`, `join_command`,
//!   `who_and_rooms_alone`, `msg_errors`, `escape_unknown_and_help`, `line_limits`,
//!   `huge_line_bounded_memory`, `invalid_utf8`, `garbage_survived`, `quit_command`,
//!   `sigterm_shuts_down_cleanly`, `flooding_help_closed_as_slow_consumer`,
//!   `pipelined_help_all_answered`, `talking_after_quit_still_gets_everything`,
//!   `half_close_gets_reply_then_eof`, `cr_and_lf_in_separate_reads`,
//!   `cr_counts_towards_the_limit`, `msg_to_self_and_in_any_case`, `case_rules`,
//!   `urgent_byte_loses_no_line` (the last ones add a second member of the room where
//!   the mode allows);
//! - **pool and concurrent** — several clients at once: `welcome_two_clients`,
//!   `message_reaches_room_not_sender`, `crlf_in_room`, `nick_in_room`, `join_in_room`,
//!   `who_and_rooms_in_room`, `msg_private`, `escape_in_room`, `line_limits_in_room`,
//!   `utf8_in_room`, `garbage_isolated`, `quit_in_room`, `slow_consumer_in_room`,
//!   `fan_out_keeps_order`, `many_clients`, `max_clients`, `emfile_backs_off`,
//!   `farewell_delivers_everything_then_bye`, `quitter_that_never_reads_is_closed`,
//!   `flood_does_not_starve_others`, `burst_reaches_every_reader`,
//!   `small_outbox_paces_readers_cuts_non_reader`, `many_senders_at_once_lose_nothing`,
//!   `endless_sender_does_not_stop_the_server`, `churn_keeps_notices_in_causal_order`,
//!   `sigterm_with_hard_clients`, `lists_cap_at_100`;
//! - **sequential**: `sequential_one_client_at_a_time`, `connect_burst_queued`;
//! - **pool**: `pool_serves_at_most_n_clients`, `connect_burst_queued`;
//! - **concurrent**: `connect_burst_all_welcomed` (up to the stage's own limit, when the
//!   call gives `max_clients = N`);
//! - with `idle_bytes_per_client`: `idle_clients_cost_little`;
//! - **cluster** (`mode = concurrent, cluster = N`): every check of `concurrent`, each across
//!   the nodes, and the checks of [`checks::cluster`]. How a check sees N processes as one
//!   server (clients round-robin over the nodes, process-level operations on every node, or on
//!   node 0 alone for the checks whose promise is about one process) is in `server.rs`; which
//!   checks run on one node, and why, is written in each of them and listed in
//!   `__conformance_tests!`. `redis-server` must be on `PATH`: without it every check fails
//!   and says so.
//!
//! Every read has a deadline (3 s for a line expected now, more only where the protocol
//! itself allows a delay, such as `SLOW_GRACE`), every server is killed when its check ends,
//! and no sleep stands in for synchronisation, so no check can hang, and a stall of seconds
//! fails.

pub mod checks;
mod client;
pub mod cluster;
mod garbage;
mod parse;
mod process;
pub mod procfs;
pub mod scripted;
mod server;

pub use client::{
    parse_rooms, parse_rooms_list, parse_welcome, parse_who, parse_who_list, rooms_line,
    rooms_more, who_line, who_more, Buffers, Client, ReadError, LINE_TIMEOUT, LIST_CAP, SILENCE,
};
pub use cluster::Broker;
pub use garbage::{garbage, Rng};
pub use procfs::Memory;
pub use server::{parse_listening_line, Server};

/// How a stage serves clients: decides which checks apply and how servers are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One client at a time.
    Sequential,
    /// A fixed pool of workers; `flag N` sets their number.
    Pool {
        /// The command-line flag that sets the number of workers, e.g. `--threads`.
        flag: &'static str,
    },
    /// Any number of clients at once.
    Concurrent,
    /// A cluster: `nodes` processes of a concurrent stage sharing one chat through a private
    /// broker (Redis) that each check starts. Clients are spread over the nodes (see
    /// [`Server`]); the macro's `cluster = N` selects it.
    Cluster {
        /// How many nodes each check starts.
        nodes: usize,
    },
}

/// The stage under test, as declared by the `conformance!` call.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Path of the stage binary (`env!("CARGO_BIN_EXE_...")`).
    pub bin: &'static str,
    /// How it serves clients.
    pub mode: Mode,
    /// Extra arguments appended to every server command line.
    pub args: &'static [&'static str],
}

/// Workers a pool gets for a check that does not say otherwise (the largest ordinary
/// check uses 8 clients at once).
pub const DEFAULT_POOL_WORKERS: usize = 16;

/// How a check wants its server started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--max-clients N`, if set.
    pub max_clients: Option<usize>,
    /// `--outbox-bytes N`, if set.
    pub outbox_bytes: Option<usize>,
    /// For a pool: how many workers (default [`DEFAULT_POOL_WORKERS`]). Ignored otherwise.
    pub workers: Option<usize>,
    /// RLIMIT_NOFILE for the server process (soft and hard), if set.
    pub nofile: Option<u64>,
    /// The read timeout of the clients the server connects (default [`LINE_TIMEOUT`]).
    pub line_timeout: Option<std::time::Duration>,
    /// In a cluster: every client of the check connects to node 0, and process-level
    /// operations (signals, memory, descriptors) act on node 0 alone, for a check whose
    /// promise is about one process. Ignored otherwise.
    pub one_node: bool,
}

impl Target {
    /// The server's arguments for `opts`:
    /// `--addr 127.0.0.1:0 [--max-clients N] [--outbox-bytes N] [FLAG WORKERS] [extra args]`.
    pub fn args_for(&self, opts: &Options) -> Vec<String> {
        let mut args = vec!["--addr".to_string(), "127.0.0.1:0".to_string()];
        if let Some(n) = opts.max_clients {
            args.extend(["--max-clients".to_string(), n.to_string()]);
        }
        if let Some(n) = opts.outbox_bytes {
            args.extend(["--outbox-bytes".to_string(), n.to_string()]);
        }
        if let Mode::Pool { flag } = self.mode {
            let workers = opts.workers.unwrap_or(DEFAULT_POOL_WORKERS);
            args.extend([flag.to_string(), workers.to_string()]);
        }
        args.extend(self.args.iter().map(|a| a.to_string()));
        args
    }

    /// Starts the stage binary with `opts` and waits until it listens.
    #[track_caller]
    pub fn start(&self, opts: Options) -> Server {
        let args = self.args_for(&opts);
        let mut server = match self.mode {
            Mode::Cluster { nodes } => {
                Server::start_cluster(self.bin, &args, opts.nofile, nodes, opts.one_node)
            }
            _ => Server::start(self.bin, &args, opts.nofile),
        };
        if let Some(timeout) = opts.line_timeout {
            server.set_line_timeout(timeout);
        }
        server
    }

    /// Whether two clients can be served at once (every mode but `sequential`).
    pub fn concurrent_clients(&self) -> bool {
        self.mode != Mode::Sequential
    }

    /// How many nodes, for a cluster.
    pub fn cluster_nodes(&self) -> Option<usize> {
        match self.mode {
            Mode::Cluster { nodes } => Some(nodes),
            _ => None,
        }
    }
}

/// Generates the conformance tests for one stage; see the crate documentation.
///
/// `bin = EXPR, mode = sequential | concurrent | pool(flag = EXPR)`, then optionally, in
/// this order, `args = [EXPR, ...]`, `name = IDENT` (wraps the tests in `mod IDENT`, so one
/// test file can hold several configurations of the same binary),
/// `idle_bytes_per_client = EXPR` (adds `idle_clients_cost_little` with that bound) and
/// `max_clients = EXPR` (a `concurrent` stage's own hard limit on connections, below the
/// default `--max-clients`, such as `select`'s: the connect burst then expects that many
/// welcomed and the rest refused with `! server full`) and `cluster = EXPR` (a `concurrent`
/// stage whose processes form a cluster on a broker: every check starts EXPR nodes and a
/// private `redis-server`; see [`Mode::Cluster`]).
#[macro_export]
macro_rules! conformance {
    (
        bin = $bin:expr, mode = $($rest:tt)*
    ) => {
        $crate::__conformance_mode! { bin = $bin; $($rest)* }
    };
}

/// Internal: splits off the mode. Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_mode {
    (bin = $bin:expr; sequential $($tail:tt)*) => {
        $crate::__conformance_opts! {
            bin = $bin; mode = $crate::Mode::Sequential; kind = sequential; $($tail)*
        }
    };
    (bin = $bin:expr; concurrent $($tail:tt)*) => {
        $crate::__conformance_opts! {
            bin = $bin; mode = $crate::Mode::Concurrent; kind = concurrent; $($tail)*
        }
    };
    (bin = $bin:expr; pool(flag = $flag:expr $(,)?) $($tail:tt)*) => {
        $crate::__conformance_opts! {
            bin = $bin; mode = $crate::Mode::Pool { flag: $flag }; kind = pool; $($tail)*
        }
    };
}

/// Internal: reads the optional `args`, `name`, `idle_bytes_per_client` and `max_clients`.
/// Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_opts {
    (
        bin = $bin:expr; mode = $mode:expr; kind = $kind:ident;
        $(, args = [$($arg:expr),* $(,)?])? $(, name = $name:ident)?
        $(, idle_bytes_per_client = $idle:expr)? $(, max_clients = $max:expr)?
        $(, cluster = $nodes:expr)? $(,)?
    ) => {
        $crate::__conformance_opts! {
            @cluster [$($nodes)?] @name [$($name)?]
            bin = $bin; mode = $mode; kind = $kind; args = [$($($arg),*)?]; idle = [$($idle)?];
            max = [$($max)?]
        }
    };
    // Not a cluster: as the mode says.
    (@cluster [] $($rest:tt)*) => {
        $crate::__conformance_opts! { $($rest)* }
    };
    // A cluster of a concurrent stage: its own mode and list of checks.
    (
        @cluster [$nodes:expr] @name [$($name:ident)?]
        bin = $bin:expr; mode = $mode:expr; kind = concurrent; $($rest:tt)*
    ) => {
        $crate::__conformance_opts! {
            @name [$($name)?]
            bin = $bin; mode = $crate::Mode::Cluster { nodes: $nodes }; kind = cluster; $($rest)*
        }
    };
    (
        @name [] bin = $bin:expr; mode = $mode:expr; kind = $kind:ident;
        args = [$($arg:expr),*]; idle = [$($idle:expr)?]; max = [$($max:expr)?]
    ) => {
        const __CHAT_TESTKIT_TARGET: $crate::Target =
            $crate::Target { bin: $bin, mode: $mode, args: &[$($arg),*] };
        $crate::__conformance_tests! { $kind }
        $crate::__conformance_idle! { $($idle)? }
        $crate::__conformance_burst! { $kind; $($max)? }
    };
    (
        @name [$name:ident] bin = $bin:expr; mode = $mode:expr; kind = $kind:ident;
        args = [$($arg:expr),*]; idle = [$($idle:expr)?]; max = [$($max:expr)?]
    ) => {
        mod $name {
            const __CHAT_TESTKIT_TARGET: $crate::Target =
                $crate::Target { bin: $bin, mode: $mode, args: &[$($arg),*] };
            $crate::__conformance_tests! { $kind }
            $crate::__conformance_idle! { $($idle)? }
            $crate::__conformance_burst! { $kind; $($max)? }
        }
    };
}

/// Internal: the idle-clients check, when the stage gave its bound. Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_idle {
    () => {};
    ($bound:expr) => {
        #[test]
        fn idle_clients_cost_little() {
            $crate::checks::idle_clients_cost_little(&__CHAT_TESTKIT_TARGET, $bound);
        }
    };
}

/// Internal: the connect burst of a `concurrent` stage, up to its own hard limit if it has
/// one (the other modes get `connect_burst_queued` in their list). Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_burst {
    (concurrent;) => {
        #[test]
        fn connect_burst_all_welcomed() {
            $crate::checks::connect_burst_all_welcomed(&__CHAT_TESTKIT_TARGET);
        }
    };
    (cluster;) => {
        #[test]
        fn connect_burst_all_welcomed() {
            $crate::checks::connect_burst_all_welcomed(&__CHAT_TESTKIT_TARGET);
        }
    };
    (concurrent; $max:expr) => {
        #[test]
        fn connect_burst_all_welcomed() {
            $crate::checks::connect_burst_welcomed_up_to(&__CHAT_TESTKIT_TARGET, $max);
        }
    };
    ($kind:ident; $($max:expr)?) => {};
}

/// Internal: which checks each kind of stage gets (the list in the crate documentation).
/// Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (sequential) => {
        $crate::__conformance_tests! {
            @common sequential_one_client_at_a_time connect_burst_queued
        }
    };
    (pool) => {
        $crate::__conformance_tests! {
            @common @multi pool_serves_at_most_n_clients connect_burst_queued
        }
    };
    // (`connect_burst_all_welcomed` comes from `__conformance_burst`.)
    (concurrent) => {
        $crate::__conformance_tests! { @common @multi }
    };
    // A cluster: the checks of a concurrent stage, and those of `checks::cluster`. Every one
    // applies; these run with all their clients on node 0 (`Options::one_node`), each saying
    // why where it starts its server:
    // - `sigterm_shuts_down_cleanly`, `sigterm_with_hard_clients`: a client on one node may
    //   hear another stopping node's members leave before its own goodbye (allowed);
    // - `max_clients`, `emfile_backs_off`: a limit, descriptors and CPU are each process's;
    // - `small_outbox_paces_readers_cuts_non_reader`, `slow_consumer_in_room`: flow control
    //   is each node's, and these count on the sender waiting for the slow reader; a sender
    //   not paced by another node's readers makes Redis buffer for that node, and past
    //   `client-output-buffer-limit pubsub` disconnect it (what a cluster does not promise).
    // (`idle_clients_cost_little` comes only with `idle_bytes_per_client`, and the cluster's
    // own call leaves it out: see crates/12-cluster/tests/conformance.rs.)
    (cluster) => {
        $crate::__conformance_tests! { @common @multi @cluster }
    };
    // Checks every mode gets (one client at a time is enough for them).
    (@common $($more:tt)*) => {
        $crate::__conformance_tests! {
            @emit
            welcome_line, message_alone_not_echoed, crlf_and_empty_lines, nick_command,
            join_command, who_and_rooms_alone, msg_errors, escape_unknown_and_help,
            line_limits, huge_line_bounded_memory, invalid_utf8, garbage_survived,
            quit_command, sigterm_shuts_down_cleanly, flooding_help_closed_as_slow_consumer,
            pipelined_help_all_answered, talking_after_quit_still_gets_everything,
            half_close_gets_reply_then_eof, cr_and_lf_in_separate_reads,
            cr_counts_towards_the_limit, msg_to_self_and_in_any_case, case_rules,
            urgent_byte_loses_no_line;
            $($more)*
        }
    };
    // Checks that need several clients at once (pool and concurrent).
    (@emit $($done:ident),*; @multi $($more:tt)*) => {
        $crate::__conformance_tests! {
            @emit
            $($done,)*
            welcome_two_clients, message_reaches_room_not_sender, crlf_in_room,
            nick_in_room, join_in_room, who_and_rooms_in_room, msg_private,
            escape_in_room, line_limits_in_room, utf8_in_room, garbage_isolated,
            quit_in_room, slow_consumer_in_room, fan_out_keeps_order, many_clients,
            max_clients, emfile_backs_off, farewell_delivers_everything_then_bye,
            quitter_that_never_reads_is_closed, flood_does_not_starve_others,
            burst_reaches_every_reader, small_outbox_paces_readers_cuts_non_reader,
            many_senders_at_once_lose_nothing, endless_sender_does_not_stop_the_server,
            churn_keeps_notices_in_causal_order, sigterm_with_hard_clients, lists_cap_at_100;
            $($more)*
        }
    };
    // Checks that only several nodes can break (a cluster).
    (@emit $($done:ident),*; @cluster $($more:tt)*) => {
        $crate::__conformance_tests! {
            @emit
            $($done,)*
            cluster_nick_taken_on_another_node, cluster_guests_are_unique_and_lowest,
            cluster_msg_across_nodes, cluster_who_rooms_and_counts_see_every_node,
            cluster_exactly_once_in_sender_order, cluster_killed_node_is_lost,
            cluster_broker_restart, cluster_sigterm_of_one_node;
            $($more)*
        }
    };
    (@emit $($check:ident),*; $($last:ident)*) => {
        $(
            #[test]
            fn $check() {
                $crate::checks::$check(&__CHAT_TESTKIT_TARGET);
            }
        )*
        $(
            #[test]
            fn $last() {
                $crate::checks::$last(&__CHAT_TESTKIT_TARGET);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_arguments_follow_the_contract() {
        let t = Target {
            bin: "x",
            mode: Mode::Pool { flag: "--threads" },
            args: &["--flavor", "current-thread"],
        };
        let opts = Options {
            max_clients: Some(3),
            outbox_bytes: Some(8192),
            ..Options::default()
        };
        assert_eq!(
            t.args_for(&opts).join(" "),
            "--addr 127.0.0.1:0 --max-clients 3 --outbox-bytes 8192 --threads 16 \
             --flavor current-thread"
        );
        let c = Target {
            bin: "x",
            mode: Mode::Concurrent,
            args: &[],
        };
        let opts = Options {
            workers: Some(2),
            ..Options::default()
        };
        assert_eq!(c.args_for(&opts).join(" "), "--addr 127.0.0.1:0");
    }
}
