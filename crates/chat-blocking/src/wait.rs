//! Waiting with a deadline: for a full socket to take bytes again, or for the time a rule
//! allows to pass, whichever comes first — and never past the server's shutdown.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use chat_net::Shutdown;

/// Why [`wait_writable`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The socket is writable (or failed: the next `send` says which).
    Writable,
    /// The deadline passed first.
    Late,
    /// The server is stopping.
    Stopping,
}

/// Sleeps until `stream` is writable, `deadline` passes, or `stop` is triggered.
///
/// `poll` watches two descriptors: the socket for `POLLOUT`, and the shutdown descriptor
/// (readable once SIGINT/SIGTERM arrived), so that nobody waits for a full socket while the
/// server stops.
#[allow(unsafe_code)]
pub(crate) fn wait_writable(stream: &TcpStream, deadline: Instant, stop: &Shutdown) -> Wake {
    loop {
        if stop.is_triggered() {
            return Wake::Stopping;
        }
        let Some(left) = remaining(deadline) else {
            return Wake::Late;
        };
        // Rounded up: waking before the deadline would only poll again.
        let timeout = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid, initialised array of two `pollfd`s that outlives the call,
        // and 2 is its length; both descriptors stay open during the call (`stream` and `stop`
        // are borrowed for it).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Wake::Writable; // let the next `send` report the error
        }
        if fds[1].revents != 0 {
            return Wake::Stopping;
        }
        if fds[0].revents != 0 {
            return Wake::Writable;
        }
    }
}

/// The time left until `deadline`, or `None` once it has come.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}
