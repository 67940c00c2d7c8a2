//! The ring: one io_uring instance, its provided buffers, and the one wait per turn.
//!
//! [`Ring`] is the only place that talks to the kernel: it sets the instance up (and says
//! clearly when the kernel refuses), queues submission entries, enters the kernel once per
//! turn of the loop, hands back the completions, and counts all three. Its drop is where a
//! completion-based program differs most from a readiness one: memory the kernel may still
//! write into cannot simply be freed, so the drop first cancels every operation and waits.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Duration;

use io_uring::types::{CancelBuilder, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use crate::buffers::{BufRing, GROUP};

/// Submission queue entries: how many operations one turn can queue before the queue is
/// full and must be handed to the kernel early (an extra system call, counted).
pub const SQ_ENTRIES: u32 = 4096;

/// Completion queue entries: four per submission slot, for the completions of operations
/// queued in earlier turns (every client has a read in the kernel). If it ever overflows,
/// the kernel keeps the extra completions aside and the next wait collects them.
pub const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;

/// Provided read buffers, shared by every client. A buffer is taken only when a client's
/// data arrives and is given back as soon as the loop has handed the bytes to the server,
/// so this bounds reads per turn, not clients.
pub const READ_BUFFERS: u16 = 256;

/// Bytes per provided buffer: what one read can take from one client in one turn.
pub const READ_BUFFER_SIZE: u32 = 16 * 1024;

/// What the ring did, for the log line at exit (and `scripts/syscalls.sh`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `io_uring_enter` calls: the system calls of the whole I/O path.
    pub enters: u64,
    /// Operations queued (submission queue entries).
    pub submitted: u64,
    /// Completions collected (completion queue entries).
    pub completed: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} io_uring_enter calls, {} operations submitted, {} completions",
            self.enters, self.submitted, self.completed
        )
    }
}

// ANCHOR: ring
/// One io_uring instance with its provided buffers.
pub struct Ring {
    /// The submission and completion queues, shared with the kernel. Declared first: dropped
    /// (closed) before the buffers it may write into.
    uring: IoUring,
    /// The provided read buffers (buffer group [`GROUP`]).
    buffers: BufRing,
    /// Entries that did not fit in a full submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Operations submitted whose last completion has not arrived yet.
    in_flight: usize,
    /// What was done.
    stats: Stats,
}
// ANCHOR_END: ring

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("buffers", &self.buffers)
            .field("backlog", &self.backlog.len())
            .field("in_flight", &self.in_flight)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The operations the loop submits, by name, to check that the kernel knows them all.
const OPCODES: [(u8, &str); 7] = [
    (opcode::AcceptMulti::CODE, "accept"),
    (opcode::Recv::CODE, "recv"),
    (opcode::Writev::CODE, "writev"),
    (opcode::Shutdown::CODE, "shutdown"),
    (opcode::AsyncCancel2::CODE, "async cancel"),
    (opcode::Close::CODE, "close"),
    (opcode::PollAdd::CODE, "poll"),
];

impl Ring {
    /// Sets up the instance and registers [`READ_BUFFERS`] provided buffers, or explains in
    /// one line why this kernel will not do.
    pub fn new() -> io::Result<Self> {
        Self::with_read_buffers(READ_BUFFERS)
    }

    /// [`Ring::new`] with `count` read buffers (a power of two; the tests starve the loop with
    /// very few).
    // ANCHOR: setup
    pub fn with_read_buffers(count: u16) -> io::Result<Self> {
        // A single thread submits, and completions are only wanted when it waits: let the
        // kernel defer its completion work to our wait (Linux 6.1). Older kernels refuse the
        // flags; they get a plain ring.
        let uring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })
            .map_err(|err| refused("io_uring_setup", &err))?;
        if !uring.params().is_feature_ext_arg() {
            return Err(refused(
                "waiting with a timeout (IORING_FEAT_EXT_ARG)",
                &io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let submitter = uring.submitter();
        let mut probe = Probe::new();
        submitter
            .register_probe(&mut probe)
            .map_err(|err| refused("IORING_REGISTER_PROBE", &err))?;
        if let Some((_, name)) = OPCODES.iter().find(|(code, _)| !probe.is_supported(*code)) {
            return Err(refused(
                &format!("the {name} operation"),
                &io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // Buffer rings came with Linux 5.19, as did multishot accept and cancelling by
        // descriptor: a kernel that takes this takes the rest.
        let buffers = BufRing::new(count, READ_BUFFER_SIZE)?;
        buffers
            .register(&submitter)
            .map_err(|err| refused("a provided-buffer ring", &err))?;
        Ok(Self {
            uring,
            buffers,
            backlog: VecDeque::new(),
            in_flight: 0,
            stats: Stats::default(),
        })
    }
    // ANCHOR_END: setup

    // ANCHOR: push
    /// Queues `entry`, to be submitted by the next [`Ring::enter`]. If the submission queue
    /// is full, what it holds is submitted at once (one more system call); if even that
    /// fails, the entry waits in a backlog, in order.
    ///
    /// # Safety
    ///
    /// Every buffer `entry` points to (an iovec array, the bytes it points to)
    /// must stay valid and unmoved until this operation's last completion has been collected
    /// by [`Ring::completions`], or until the ring is dropped (the drop waits for every
    /// operation). Descriptors need no such care: the kernel holds its own reference.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        self.stats.submitted += 1;
        if self.backlog.is_empty() {
            // SAFETY: the caller keeps what `entry` points to alive until its completion.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
            if self.submit_now().is_ok() {
                // SAFETY: as above.
                if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                    return;
                }
            }
        }
        self.backlog.push_back(entry);
    }
    // ANCHOR_END: push

    /// The one system call of a turn: submits everything queued since the last one, and
    /// sleeps until at least one completion is there or `timeout` (if any) has passed.
    // ANCHOR: enter
    pub fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // Entries that waited for room go first (rare: a turn queued more than the queue
        // holds). Handing the kernel a full queue costs one more system call each time.
        loop {
            self.drain_backlog();
            if self.backlog.is_empty() || self.submit_now().is_err() {
                break;
            }
        }
        let submitter = self.uring.submitter();
        let result = match timeout {
            Some(timeout) => {
                let timespec = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args(1, &args)
            }
            None => submitter.submit_and_wait(1),
        };
        self.stats.enters += 1;
        match result {
            Ok(_) => Ok(()),
            // The timeout passed (ETIME), a signal came (EINTR), or completions are waiting
            // to be collected first (EBUSY): all of them mean "look at the completions".
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
    // ANCHOR_END: enter

    /// Appends every completion the kernel has posted to `out`, and counts the operations
    /// that are over (a multishot operation is over at its completion without `MORE`).
    pub fn completions(&mut self, out: &mut Vec<cqueue::Entry>) {
        let before = out.len();
        out.extend(self.uring.completion());
        for cqe in &out[before..] {
            if !cqueue::more(cqe.flags()) {
                self.in_flight -= 1;
            }
        }
        self.stats.completed += (out.len() - before) as u64;
    }

    /// The provided read buffers.
    pub fn buffers(&mut self) -> &mut BufRing {
        &mut self.buffers
    }

    /// Operations in the kernel (or queued for it) whose last completion has not come.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// What the ring did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Moves backlog entries into the submission queue while it has room.
    fn drain_backlog(&mut self) {
        let mut queue = self.uring.submission();
        while let Some(entry) = self.backlog.front() {
            // SAFETY: every backlog entry was queued by `push`, whose caller keeps what it
            // points to alive until its completion (which cannot have come: it was never
            // submitted).
            if unsafe { queue.push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// Submits the full submission queue now, without waiting.
    fn submit_now(&mut self) -> io::Result<usize> {
        self.stats.enters += 1;
        self.uring.submit()
    }
}

// ANCHOR: drop
impl Drop for Ring {
    /// The loop ends only when no operation is in flight; this is for the other ways out (an
    /// error, a panic). An operation still in the kernel may write into a provided buffer or
    /// read from a write's iovecs after we freed them, so: cancel everything, wait until it
    /// is cancelled, unregister the buffers, and only then let the memory go (the ring is
    /// closed before `buffers` is unmapped, and before the loop's connections — which own the
    /// writes' buffers — are dropped).
    fn drop(&mut self) {
        if self.in_flight > 0 {
            let submitter = self.uring.submitter();
            if let Err(err) = submitter.register_sync_cancel(None, CancelBuilder::any()) {
                log::debug!("cancelling what is left in the ring: {err}");
            }
        }
        let _ = self.uring.submitter().unregister_buf_ring(GROUP);
    }
}
// ANCHOR_END: drop

/// The one-line error for a kernel that will not run this stage: what failed, and why that
/// usually happens.
pub fn refused(what: &str, err: &io::Error) -> io::Error {
    let why = match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring",
        Some(libc::EPERM) => {
            "io_uring is disabled here (sysctl kernel.io_uring_disabled, or a seccomp filter)"
        }
        Some(libc::ENOMEM) => "the locked-memory limit is too low for the rings (ulimit -l)",
        Some(libc::EINVAL | libc::EOPNOTSUPP) => "this kernel is too old",
        _ => "the kernel refused",
    };
    io::Error::new(
        err.kind(),
        format!(
            "io_uring is not available: {what} failed ({err}): {why}; \
             chat-io-uring needs Linux 5.19 or later with io_uring enabled"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_line_that_says_why() {
        let err = refused("io_uring_setup", &io::Error::from_raw_os_error(libc::EPERM));
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("io_uring is not available: io_uring_setup failed"));
        assert!(text.contains("kernel.io_uring_disabled"), "{text}");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let old = refused(
            "a provided-buffer ring",
            &io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(old.to_string().contains("5.19"), "{old}");
    }
}
