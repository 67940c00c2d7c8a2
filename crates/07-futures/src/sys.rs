//! The three system calls our runtime needs, wrapped once: `epoll` (wait for many descriptors),
//! `eventfd` (a counter another thread can poke to interrupt that wait) and `ioctl(FIONBIO)`
//! (make a descriptor non-blocking).
//!
//! This is what `mio` or smol's `polling` crate do for real, on every platform. Here it is
//! Linux only and about a hundred lines, so that nothing under the reactor is hidden. Every
//! `unsafe` block is one system call on descriptors this module owns or borrows.
//!
//! Run its tests with `cargo test -p chat-futures sys::`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Readiness bits, as epoll spells them (`EPOLLIN` and friends are `c_int` in `libc`).
pub const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// The peer will send no more (it shut down its writing side or closed).
pub const READ_CLOSED: u32 = libc::EPOLLRDHUP as u32;
/// The peer or the socket failed or hung up: both directions must look (and see an error).
pub const HANG_UP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Room to write.
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Edge-triggered: report a change of readiness once, not on every wait while it lasts.
const EDGE: u32 = libc::EPOLLET as u32;

/// Turns the `-1`-and-`errno` convention of a system call into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance: the kernel's list of descriptors we watch, and a call that sleeps until
/// some of them change.
// ANCHOR: epoll
#[derive(Debug)]
pub struct Epoll {
    /// The epoll descriptor; closing it forgets every registration.
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty interest list.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call with a flag argument; no pointers.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Self {
            // SAFETY: `fd` was just returned by the kernel and nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for `interest` ([`READABLE`], [`WRITABLE`] or both), edge-triggered, for
    /// as long as it is registered. Every event about it carries `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64, interest: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest | EDGE,
            u64: token,
        };
        let op = libc::EPOLL_CTL_ADD;
        // SAFETY: both descriptors are open (one is borrowed, one owned); `event` is a valid
        // struct that outlives the call, which only reads it.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut event) })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let op = libc::EPOLL_CTL_DEL;
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        check(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                op,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Sleeps until a watched descriptor changes or `timeout` passes (`None`: no limit), and
    /// fills the front of `events`; returns how many it filled. A signal cutting the sleep
    /// short counts as "nothing happened".
    pub fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let timeout_ms = match timeout {
            None => -1,
            // Round *up*: a timer 0.3 ms away must not become a 0 ms wait, or we would spin
            // until it expires.
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        let capacity = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a valid, writable buffer of `capacity` elements for the whole
        // call; the kernel writes at most that many.
        let ret = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                capacity,
                timeout_ms,
            )
        };
        match check(ret) {
            Ok(n) => Ok(n as usize),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(err) => Err(err),
        }
    }
}
// ANCHOR_END: epoll

/// A counter in the kernel that is readable while non-zero: the way another thread (or a
/// signal handler) interrupts an `epoll_wait` it cannot otherwise reach.
#[derive(Debug)]
pub struct EventFd {
    /// The eventfd descriptor, non-blocking.
    fd: OwnedFd,
}

impl EventFd {
    /// A counter at zero.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call with integer arguments.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        Ok(Self {
            // SAFETY: `fd` was just returned by the kernel and nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, to register in an [`Epoll`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.fd.as_fd()
    }

    /// Adds one to the counter, making it readable. Safe from any thread.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid `u64` on the stack to an open descriptor. It can
        // only fail when the counter is about to overflow, and then it is readable anyway.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Resets the counter to zero (it stops being readable).
    pub fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid `u64` on the stack; EAGAIN (already zero)
        // is fine to ignore.
        unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut count).cast(), 8) };
    }
}

/// Makes a descriptor non-blocking: a `read` with nothing to read fails with `WouldBlock`
/// instead of putting the thread to sleep. Every descriptor the reactor watches is made so.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO on an open descriptor reads one `c_int` through a valid pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &raw const on) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    use std::os::unix::net::UnixStream;

    fn no_events() -> Vec<libc::epoll_event> {
        vec![libc::epoll_event { events: 0, u64: 0 }; 8]
    }

    #[test]
    fn epoll_reports_the_token_of_the_ready_descriptor() {
        let epoll = Epoll::new().expect("epoll");
        let (a, mut a_peer) = UnixStream::pair().expect("pair");
        let (b, _b_peer) = UnixStream::pair().expect("pair");
        epoll.add(a.as_fd(), 7, READABLE | WRITABLE).expect("add a");
        epoll.add(b.as_fd(), 9, READABLE | WRITABLE).expect("add b");
        let mut events = no_events();
        // Both are writable right after registration (an edge from "unknown").
        let n = epoll.wait(&mut events, Some(Duration::ZERO)).expect("wait");
        assert_eq!(n, 2);
        // Edge-triggered: nothing changed, so nothing is reported again.
        assert_eq!(
            epoll.wait(&mut events, Some(Duration::ZERO)).expect("wait"),
            0
        );
        a_peer.write_all(b"x").expect("write");
        let n = epoll
            .wait(&mut events, Some(Duration::from_secs(5)))
            .expect("wait");
        assert_eq!(n, 1);
        let (token, bits) = (events[0].u64, events[0].events);
        assert_eq!(token, 7);
        assert_ne!(bits & READABLE, 0);
        epoll.delete(a.as_fd()).expect("delete");
        a_peer.write_all(b"y").expect("write");
        assert_eq!(
            epoll.wait(&mut events, Some(Duration::ZERO)).expect("wait"),
            0
        );
    }

    #[test]
    fn eventfd_interrupts_a_wait_from_another_thread() {
        let epoll = Epoll::new().expect("epoll");
        let notify = std::sync::Arc::new(EventFd::new().expect("eventfd"));
        epoll.add(notify.fd(), 1, READABLE).expect("add");
        let poker = {
            let notify = std::sync::Arc::clone(&notify);
            std::thread::spawn(move || notify.notify())
        };
        let mut events = no_events();
        // No timeout: only the other thread's write can end this wait.
        let n = epoll.wait(&mut events, None).expect("wait");
        assert_eq!((n, events[0].u64), (1, 1));
        poker.join().expect("poker");
        notify.drain();
    }

    #[test]
    fn nonblocking_reads_say_would_block() {
        use std::io::Read as _;
        let (mut a, _peer) = UnixStream::pair().expect("pair");
        set_nonblocking(a.as_fd()).expect("nonblocking");
        let err = a.read(&mut [0; 8]).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
