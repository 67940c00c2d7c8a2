//! The reactor: the one place that waits. It turns "this socket is readable" and "this
//! deadline has passed" into calls to the right [`Waker`].
//!
//! A future that cannot make progress (its socket said `WouldBlock`, its deadline is in the
//! future) hands its waker to the reactor and returns `Pending`. When every task is pending,
//! [`block_on`](fn@crate::block_on) calls [`Reactor::react`], which sleeps in one `epoll_wait`
//! for all sockets and the nearest timer, and wakes exactly the tasks whose socket or timer
//! fired. The reactor never polls a future and knows nothing about tasks: it only calls
//! `wake`. This is the shape of smol's `async-io` (`src/reactor.rs`), minus portability.
//!
//! Readiness is **edge-triggered** and **remembered**: every descriptor is registered once, for
//! reading and writing, and the reactor keeps one `ready` flag per direction. A flag starts
//! `true` (we do not know that it is *not* ready, so trying costs one system call at most), is
//! cleared only when a system call says `WouldBlock`, and is set again by the next event. A
//! future therefore sleeps only after the kernel told it to, and can never miss an edge:
//! on one thread, no event is processed between the `WouldBlock` and the registration.
//!
//! There is one reactor per thread ([`Reactor::get`]); it is created on first use.
//!
//! Run its tests with `cargo test -p chat-futures reactor::`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sys::{self, Epoll, EventFd};

/// The token of the [`EventFd`] that other threads poke; sources get tokens from 1 up.
const NOTIFY_TOKEN: u64 = 0;

/// How many events one `epoll_wait` may return. More simply wait for the next call.
const EVENTS_PER_WAIT: usize = 1024;

/// Which half of a socket a future waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes (or a connection, or end-of-file) to read.
    Read,
    /// Room to write.
    Write,
}

/// One direction of one registered descriptor.
#[derive(Debug)]
struct Interest {
    /// False only between a `WouldBlock` and the next event for this direction.
    ready: bool,
    /// This direction is over (the peer closed it, or the socket failed): the next system
    /// call returns at once (end of stream, or an error), so it stays ready for good. An
    /// edge-triggered epoll reports a hang-up once; forgetting it would strand the task.
    closed: bool,
    /// The task to wake when `ready` becomes true. One waiter per direction: a socket has at
    /// most one reading task and one writing task (the chat server's client task is both).
    waker: Option<Waker>,
}

impl Interest {
    /// Ready until proven otherwise.
    fn new() -> Self {
        Self {
            ready: true,
            closed: false,
            waker: None,
        }
    }

    /// An event arrived: remember it and collect the waiting task's waker.
    fn fire(&mut self, closed: bool, wakers: &mut Vec<Waker>) {
        self.ready = true;
        self.closed |= closed;
        wakers.extend(self.waker.take());
    }
}

/// A registered descriptor: what the reactor knows about its two directions.
#[derive(Debug)]
struct Source {
    /// Waiting to read.
    read: Interest,
    /// Waiting to write.
    write: Interest,
}

impl Source {
    /// The interest for one direction.
    fn interest(&mut self, direction: Direction) -> &mut Interest {
        match direction {
            Direction::Read => &mut self.read,
            Direction::Write => &mut self.write,
        }
    }
}

/// This thread's reactor: epoll, the registered sources, and the timers.
// ANCHOR: reactor
pub struct Reactor {
    /// The kernel's interest list; one `epoll_wait` on it is where the thread sleeps.
    epoll: Epoll,
    /// Registered in `epoll` under [`NOTIFY_TOKEN`]: another thread writes to it to end a
    /// sleep early (its waker was called for a task of ours).
    notifier: Arc<EventFd>,
    /// Every registered descriptor, by the token epoll hands back with its events.
    sources: RefCell<HashMap<u64, Source>>,
    /// The token the next registration gets.
    next_token: Cell<u64>,
    /// Pending timers, ordered by deadline (then by id, to keep equal deadlines apart). A
    /// sorted map, as in `async-io`, rather than a heap, so that a dropped timer is removed
    /// at once instead of lingering until its deadline.
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    /// The id the next timer gets.
    next_timer: Cell<u64>,
    /// Where `epoll_wait` writes its events; allocated once.
    events: RefCell<Vec<libc::epoll_event>>,
    /// Wakers collected during one `react`, called after every borrow is released (a waker
    /// may do anything, including registering again). Kept to reuse its allocation.
    to_wake: RefCell<Vec<Waker>>,
    /// How many times `react` returned: a busy-polling bug shows up here as a huge number.
    reactions: Cell<u64>,
}
// ANCHOR_END: reactor

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("epoll", &self.epoll)
            .field("sources", &self.sources.borrow().len())
            .field("timers", &self.timers.borrow().len())
            .field("reactions", &self.reactions.get())
            .finish()
    }
}

thread_local! {
    /// Each thread that runs futures gets its own reactor, on first use.
    static REACTOR: Rc<Reactor> = Rc::new(
        // Like `async-io`, treat this as fatal: without an epoll instance nothing can wait,
        // and it only fails when the process is out of descriptors or memory at startup.
        Reactor::new().expect("cannot create the reactor (epoll_create1 or eventfd failed)"),
    );
}

impl Reactor {
    /// A reactor with nothing registered.
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let notifier = Arc::new(EventFd::new()?);
        // Readable only: an eventfd is always writable, which would just be noise.
        epoll.add(notifier.fd(), NOTIFY_TOKEN, sys::READABLE)?;
        Ok(Self {
            epoll,
            notifier,
            sources: RefCell::new(HashMap::new()),
            next_token: Cell::new(NOTIFY_TOKEN + 1),
            timers: RefCell::new(BTreeMap::new()),
            next_timer: Cell::new(0),
            events: RefCell::new(vec![
                libc::epoll_event { events: 0, u64: 0 };
                EVENTS_PER_WAIT
            ]),
            to_wake: RefCell::new(Vec::new()),
            reactions: Cell::new(0),
        })
    }

    /// This thread's reactor.
    pub fn get() -> Rc<Reactor> {
        REACTOR.with(Rc::clone)
    }

    /// Something any thread can poke to end this reactor's sleep.
    pub fn notifier(&self) -> Arc<EventFd> {
        Arc::clone(&self.notifier)
    }

    /// How many times [`Reactor::react`] has returned on this reactor.
    pub fn reactions(&self) -> u64 {
        self.reactions.get()
    }

    /// Registered descriptors (for tests: a dropped socket must leave none behind).
    pub fn sources(&self) -> usize {
        self.sources.borrow().len()
    }

    /// Starts watching a (non-blocking) descriptor; returns its token.
    pub fn register(&self, fd: BorrowedFd<'_>) -> io::Result<u64> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.epoll.add(fd, token, sys::READABLE | sys::WRITABLE)?;
        let source = Source {
            read: Interest::new(),
            write: Interest::new(),
        };
        self.sources.borrow_mut().insert(token, source);
        Ok(token)
    }

    /// Stops watching a descriptor (before it is closed). Events already queued for its
    /// token are ignored: tokens are never reused.
    pub fn deregister(&self, token: u64, fd: BorrowedFd<'_>) {
        // It may fail only if the descriptor is already closed, which removed it anyway.
        let _ = self.epoll.delete(fd);
        self.sources.borrow_mut().remove(&token);
    }

    /// `Ready` if the descriptor may be ready in `direction` (try the system call); otherwise
    /// stores the task's waker, to be woken by the next event, and returns `Pending`.
    // ANCHOR: poll_ready
    pub fn poll_ready(&self, token: u64, direction: Direction, cx: &mut Context<'_>) -> Poll<()> {
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(&token) else {
            return Poll::Ready(()); // not registered (any more): let the system call fail
        };
        let interest = source.interest(direction);
        if interest.ready {
            return Poll::Ready(());
        }
        match &mut interest.waker {
            // Polled again by the same task: keep the waker we have.
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
    // ANCHOR_END: poll_ready

    /// The last system call in `direction` said `WouldBlock`: not ready until the next event,
    /// unless that direction is closed for good.
    pub fn clear_ready(&self, token: u64, direction: Direction) {
        if let Some(source) = self.sources.borrow_mut().get_mut(&token) {
            let interest = source.interest(direction);
            interest.ready = interest.closed;
        }
    }

    /// Adds a timer; `waker` is woken once `deadline` has passed. Returns the timer's id.
    pub fn insert_timer(&self, deadline: Instant, waker: Waker) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        self.timers.borrow_mut().insert((deadline, id), waker);
        id
    }

    /// Replaces the waker of a pending timer (its future was moved to another task).
    pub fn update_timer(&self, deadline: Instant, id: u64, waker: &Waker) {
        if let Some(slot) = self.timers.borrow_mut().get_mut(&(deadline, id)) {
            if !slot.will_wake(waker) {
                slot.clone_from(waker);
            }
        }
    }

    /// Removes a timer (it fired, or its future was dropped). No-op if already gone.
    pub fn remove_timer(&self, deadline: Instant, id: u64) {
        self.timers.borrow_mut().remove(&(deadline, id));
    }

    /// Pending timers (for tests: a dropped timer must leave nothing behind).
    pub fn timers(&self) -> usize {
        self.timers.borrow().len()
    }

    /// Waits for I/O events or the nearest timer, then wakes the tasks they concern.
    ///
    /// With `block == false` it only collects what already happened (a task is still
    /// runnable, so we must not sleep). Otherwise it sleeps until a socket changes, a
    /// timer expires or another thread calls the [`notifier`](Reactor::notifier).
    // ANCHOR: react
    pub fn react(&self, block: bool) -> io::Result<()> {
        let mut to_wake = self.to_wake.take();
        // 1. How long may we sleep? Until the nearest deadline, or forever if none.
        let timeout = if block {
            self.fire_timers(Instant::now(), &mut to_wake);
            if to_wake.is_empty() {
                self.timers
                    .borrow()
                    .first_key_value()
                    .map(|((deadline, _), _)| deadline.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO) // a timer already expired: do not sleep
            }
        } else {
            Some(Duration::ZERO)
        };

        // 2. Sleep in the kernel, for every socket at once.
        let mut events = self.events.borrow_mut();
        let n = self.epoll.wait(&mut events, timeout)?;

        // 3. Turn events into wakers: mark the direction ready, take its waiting task.
        {
            let mut sources = self.sources.borrow_mut();
            for event in &events[..n] {
                let (token, bits) = (event.u64, event.events);
                if token == NOTIFY_TOKEN {
                    self.notifier.drain(); // its only job was to end the sleep
                    continue;
                }
                let Some(source) = sources.get_mut(&token) else {
                    continue; // deregistered since the kernel queued this event
                };
                if bits & (sys::READABLE | sys::HANG_UP) != 0 {
                    let closed = bits & (sys::READ_CLOSED | sys::HANG_UP) != 0;
                    source.read.fire(closed, &mut to_wake);
                }
                if bits & (sys::WRITABLE | sys::HANG_UP) != 0 {
                    source.write.fire(bits & sys::HANG_UP != 0, &mut to_wake);
                }
            }
        }
        drop(events);
        self.fire_timers(Instant::now(), &mut to_wake);

        // 4. Wake them, with no borrow held: a waker only queues its task, which the
        //    executor polls after we return.
        for waker in to_wake.drain(..) {
            waker.wake();
        }
        self.to_wake.replace(to_wake);
        self.reactions.set(self.reactions.get() + 1);
        Ok(())
    }
    // ANCHOR_END: react

    /// Removes every timer whose deadline is not after `now` and collects its waker.
    fn fire_timers(&self, now: Instant, to_wake: &mut Vec<Waker>) {
        let mut timers = self.timers.borrow_mut();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            to_wake.push(entry.remove());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tour::CountingWaker;
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    use std::os::unix::net::UnixStream;

    /// A non-blocking socket pair registered in `reactor`: (ours, its token, the peer).
    fn registered_pair(reactor: &Reactor) -> (UnixStream, u64, UnixStream) {
        let (ours, peer) = UnixStream::pair().expect("pair");
        sys::set_nonblocking(ours.as_fd()).expect("nonblocking");
        let token = reactor.register(ours.as_fd()).expect("register");
        (ours, token, peer)
    }

    #[test]
    fn readiness_reaches_the_right_waker() {
        let reactor = Reactor::new().expect("reactor");
        let (a, a_token, mut a_peer) = registered_pair(&reactor);
        let (b, b_token, _b_peer) = registered_pair(&reactor);
        let (a_waker, a_count) = CountingWaker::new();
        let (b_waker, b_count) = CountingWaker::new();

        // Fresh sources are "maybe ready": the caller tries the system call first.
        let mut cx = Context::from_waker(&a_waker);
        assert!(reactor
            .poll_ready(a_token, Direction::Read, &mut cx)
            .is_ready());
        // The call said WouldBlock: now both tasks wait for readability.
        reactor.clear_ready(a_token, Direction::Read);
        reactor.clear_ready(b_token, Direction::Read);
        assert!(reactor
            .poll_ready(a_token, Direction::Read, &mut cx)
            .is_pending());
        let mut cx = Context::from_waker(&b_waker);
        assert!(reactor
            .poll_ready(b_token, Direction::Read, &mut cx)
            .is_pending());

        reactor.react(false).expect("react"); // the registration edges: nobody is woken
        assert_eq!((a_count.get(), b_count.get()), (0, 0));

        a_peer.write_all(b"hello").expect("write");
        reactor.react(true).expect("react"); // returns: a became readable
        assert_eq!((a_count.get(), b_count.get()), (1, 0));
        // The waker was taken: a second event does not wake again until re-registered.
        a_peer.write_all(b"again").expect("write");
        reactor.react(true).expect("react");
        assert_eq!((a_count.get(), b_count.get()), (1, 0));
        let mut cx = Context::from_waker(&a_waker);
        assert!(reactor
            .poll_ready(a_token, Direction::Read, &mut cx)
            .is_ready());

        reactor.deregister(a_token, a.as_fd());
        reactor.deregister(b_token, b.as_fd());
        assert_eq!(reactor.sources(), 0);
    }

    #[test]
    fn writers_and_readers_of_one_socket_are_woken_separately() {
        let reactor = Reactor::new().expect("reactor");
        let (ours, token, mut peer) = registered_pair(&reactor);
        let (reader, reads) = CountingWaker::new();
        let (writer, writes) = CountingWaker::new();
        reactor.clear_ready(token, Direction::Read);
        reactor.clear_ready(token, Direction::Write);
        let pending_read =
            reactor.poll_ready(token, Direction::Read, &mut Context::from_waker(&reader));
        let pending_write =
            reactor.poll_ready(token, Direction::Write, &mut Context::from_waker(&writer));
        assert!(pending_read.is_pending() && pending_write.is_pending());
        reactor.react(false).expect("react"); // registration edges (writable) wake the writer
        let writes_after_edge = writes.get();
        peer.write_all(b"x").expect("write");
        reactor.react(true).expect("react");
        assert_eq!(reads.get(), 1);
        assert_eq!(writes.get(), writes_after_edge);
        reactor.deregister(token, ours.as_fd());
    }

    #[test]
    fn hang_up_wakes_the_reader() {
        let reactor = Reactor::new().expect("reactor");
        let (ours, token, peer) = registered_pair(&reactor);
        reactor.react(false).expect("react");
        let (waker, count) = CountingWaker::new();
        reactor.clear_ready(token, Direction::Read);
        let poll = reactor.poll_ready(token, Direction::Read, &mut Context::from_waker(&waker));
        assert!(poll.is_pending());
        drop(peer);
        reactor.react(true).expect("react");
        assert_eq!(count.get(), 1, "end-of-file is something to read");
        // The hang-up was reported once (edge-triggered), so it must not be forgotten: even
        // after a `WouldBlock` (readiness cleared), the reader still finds it ready.
        reactor.clear_ready(token, Direction::Read);
        let poll = reactor.poll_ready(token, Direction::Read, &mut Context::from_waker(&waker));
        assert!(poll.is_ready());
        reactor.deregister(token, ours.as_fd());
    }

    #[test]
    fn timers_fire_in_deadline_order_and_dropped_ones_never() {
        let reactor = Reactor::new().expect("reactor");
        let now = Instant::now();
        let (late, late_count) = CountingWaker::new();
        let (early, early_count) = CountingWaker::new();
        let (dropped, dropped_count) = CountingWaker::new();
        reactor.insert_timer(now + Duration::from_millis(40), late);
        reactor.insert_timer(now + Duration::from_millis(10), early);
        let id = reactor.insert_timer(now + Duration::from_millis(20), dropped);
        reactor.remove_timer(now + Duration::from_millis(20), id);
        assert_eq!(reactor.timers(), 2);

        // Sleep until a timer fires (epoll_wait may return early, e.g. on a signal).
        while early_count.get() == 0 {
            reactor.react(true).expect("react");
        }
        assert!(Instant::now() >= now + Duration::from_millis(10));
        assert_eq!(late_count.get(), 0, "the late timer is not due yet");
        while late_count.get() == 0 {
            reactor.react(true).expect("react");
        }
        assert!(Instant::now() >= now + Duration::from_millis(40));
        assert_eq!((early_count.get(), late_count.get()), (1, 1));
        assert_eq!(dropped_count.get(), 0);
        assert_eq!(reactor.timers(), 0);
    }

    #[test]
    fn another_thread_can_end_the_sleep() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let reactor = Reactor::new().expect("reactor");
        // Nothing registered, and one timer far away as a safety net: only the notifier can
        // end the sleep early.
        let (net, net_count) = CountingWaker::new();
        reactor.insert_timer(Instant::now() + Duration::from_secs(10), net);
        let poked = Arc::new(AtomicBool::new(false));
        let notifier = reactor.notifier();
        let poker = {
            let poked = Arc::clone(&poked);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                poked.store(true, Ordering::SeqCst);
                notifier.notify();
            })
        };
        while !poked.load(Ordering::SeqCst) && net_count.get() == 0 {
            reactor.react(true).expect("react");
        }
        poker.join().expect("poker");
        assert_eq!(
            net_count.get(),
            0,
            "the safety-net timer ended the sleep, not the notifier"
        );
    }
}
