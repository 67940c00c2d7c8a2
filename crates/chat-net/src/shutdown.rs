//! SIGINT and SIGTERM as something a server can wait for.
//!
//! A signal handler may do almost nothing safely; writing a byte to a pipe is one of the few
//! things it may do (the "self-pipe trick"). `signal-hook` installs such a handler. The read
//! end of the pipe then becomes readable when a signal arrives, so:
//!
//! - an event loop (`select`, `epoll`, `mio`, our own reactor) watches [`Shutdown::fd`] like
//!   any socket;
//! - a blocking server parks a thread in [`Shutdown::wait`];
//! - anything can ask [`Shutdown::is_triggered`], and tests call [`Shutdown::trigger`].
//!
//! The byte is never read, so the descriptor stays readable: every watcher sees it.

use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A one-way switch from "running" to "stopping", shared by clones.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Shared by every clone.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once the server must stop (by a signal or [`Shutdown::trigger`]).
    flag: Arc<AtomicBool>,
    /// Readable once triggered.
    reader: UnixStream,
    /// Where the signal handler (or `trigger`) writes its byte; non-blocking.
    writer: UnixStream,
}

impl Shutdown {
    /// A switch that is not triggered yet and reacts to no signal yet.
    pub fn new() -> io::Result<Self> {
        let (reader, writer) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            inner: Arc::new(Inner {
                flag: Arc::new(AtomicBool::new(false)),
                reader,
                writer,
            }),
        })
    }

    /// Triggers this switch on SIGINT and SIGTERM (instead of the default, dying at once).
    pub fn on_signals(&self) -> io::Result<()> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&self.inner.flag))?;
            signal_hook::low_level::pipe::register(signal, self.inner.writer.try_clone()?)?;
        }
        Ok(())
    }

    /// Stops the server, as a signal would.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let _ = (&self.inner.writer).write(&[1]); // full pipe: already triggered
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// A descriptor that becomes readable when triggered, for event loops. Never read it.
    pub fn fd(&self) -> RawFd {
        self.inner.reader.as_raw_fd()
    }

    /// Blocks the calling thread until triggered.
    pub fn wait(&self) {
        while !self.is_triggered() {
            let mut pollfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pollfd` is a valid, initialised array of one element that outlives the
            // call, and its descriptor stays open as long as `self` does.
            let ready = unsafe { libc::poll(&mut pollfd, 1, -1) };
            if ready > 0 {
                // The signal handler writes the byte after setting the flag; a readable pipe
                // with the flag still unset cannot happen, but loop rather than assume.
                self.inner.flag.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl AsRawFd for Shutdown {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl AsFd for Shutdown {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.reader.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_a_waiting_thread() {
        let shutdown = Shutdown::new().expect("socketpair");
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait())
        };
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.join().expect("waiter finished");
        assert!(shutdown.is_triggered());
    }
}
