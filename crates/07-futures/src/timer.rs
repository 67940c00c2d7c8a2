//! [`Timer`]: a future that is ready once a deadline has passed, the async `sleep`.
//!
//! It does not block and does not spin: polled before its deadline, it gives its waker to the
//! reactor's timer list and returns `Pending`; the reactor sleeps no longer than the nearest
//! deadline and wakes it. `count()` in the tour, the chat server's timer task (which sleeps
//! until the server's next deadline) and its accept back-off are built on it.
//!
//! Run its tests with `cargo test -p chat-futures timer::`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::reactor::Reactor;

/// Ready at (or after) its deadline.
// ANCHOR: timer
#[derive(Debug)]
pub struct Timer {
    /// When it becomes ready.
    deadline: Instant,
    /// Our id in the reactor's timer list, once polled (before that, nothing is registered).
    id: Option<u64>,
    /// The reactor of the thread that created it.
    reactor: Rc<Reactor>,
}

impl Timer {
    /// Ready after `duration`.
    pub fn after(duration: Duration) -> Self {
        Self::at(Instant::now() + duration)
    }

    /// Ready at `deadline`.
    pub fn at(deadline: Instant) -> Self {
        Self {
            deadline,
            id: None,
            reactor: Reactor::get(),
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut(); // `Timer` has no self-references: it is `Unpin`
        if Instant::now() >= this.deadline {
            if let Some(id) = this.id.take() {
                this.reactor.remove_timer(this.deadline, id);
            }
            return Poll::Ready(());
        }
        match this.id {
            None => this.id = Some(this.reactor.insert_timer(this.deadline, cx.waker().clone())),
            Some(id) => this.reactor.update_timer(this.deadline, id, cx.waker()),
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // A timer nobody waits for any more must not wake anybody.
        if let Some(id) = self.id {
            self.reactor.remove_timer(self.deadline, id);
        }
    }
}
// ANCHOR_END: timer

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;
    use crate::tour::CountingWaker;

    #[test]
    fn a_timer_is_not_ready_before_its_deadline() {
        let start = Instant::now();
        block_on(Timer::after(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn polling_registers_once_and_dropping_unregisters() {
        let reactor = Reactor::get();
        let before = reactor.timers();
        let (waker, count) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::after(Duration::from_secs(3600));
        assert_eq!(
            reactor.timers(),
            before,
            "nothing is registered until polled"
        );
        assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        assert_eq!(reactor.timers(), before + 1);
        drop(timer);
        assert_eq!(reactor.timers(), before);
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn an_expired_timer_is_ready_at_once() {
        let (waker, _count) = CountingWaker::new();
        let mut timer = Timer::at(Instant::now());
        let ready = Pin::new(&mut timer).poll(&mut Context::from_waker(&waker));
        assert!(ready.is_ready());
    }
}
