//! A task's doorbell: a "rung" flag and a waker slot.
//!
//! Stage 7 built wakers from scratch: a task that has nothing to do stores its [`Waker`]
//! where the event it waits for will find it, and whoever causes that event calls
//! [`Waker::wake`]. A doorbell is that pattern for one kind of event, "look at your state
//! again", on nothing but `std`: any runtime's task can wait for it, because every runtime
//! hands its tasks a `Waker`. That is why the task stages need no runtime-specific notifier
//! (tokio's `Notify`, an `async-channel` of capacity one) and can share the code that rings.
//!
//! The flag makes a ring that comes while the task is busy (not waiting) stick: the task
//! sees it the next time it waits, so no ring is ever lost between "I looked at my state"
//! and "I went to sleep".

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

// ANCHOR: doorbell
/// Rung by anybody, waited for by one task.
#[derive(Debug, Default)]
pub struct Doorbell {
    /// The flag and the slot, behind one small lock of their own: a task checking its
    /// doorbell never waits for the server's lock.
    bell: Mutex<Bell>,
}

/// What the doorbell's lock protects.
#[derive(Debug, Default)]
struct Bell {
    /// Rung since the task last looked.
    rung: bool,
    /// The waker of the task, while it waits.
    waker: Option<Waker>,
}

impl Doorbell {
    /// A doorbell nobody has rung.
    pub const fn new() -> Self {
        Self {
            bell: Mutex::new(Bell {
                rung: false,
                waker: None,
            }),
        }
    }

    /// Rings. Returns the waker of the task if it is waiting: the caller wakes it once it
    /// has released its own locks (waking a task may mean waking a thread, a system call).
    #[must_use = "wake the returned waker, or the waiting task sleeps on"]
    pub fn ring(&self) -> Option<Waker> {
        let mut bell = self.lock();
        bell.rung = true;
        bell.waker.take()
    }

    /// Forgets a ring: the task is about to look at its state anyway.
    pub fn clear(&self) {
        self.lock().rung = false;
    }

    /// Ready (and cleared) if rung; otherwise the task's waker is stored for the next ring.
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut bell = self.lock();
        if std::mem::take(&mut bell.rung) {
            return Poll::Ready(());
        }
        // The same task polls again and again: clone its waker only when it changed (stage 7's
        // `park` does the same).
        match &bell.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => bell.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits until rung. The future holds only a reference: it costs a waiting task 8 bytes.
    pub fn rung(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_rung(cx))
    }
    // ANCHOR_END: doorbell

    /// The lock, even if a thread panicked while holding it (a flag and a slot cannot be left
    /// half-updated).
    fn lock(&self) -> MutexGuard<'_, Bell> {
        self.bell
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_ring_while_busy_is_not_lost() {
        let bell = Doorbell::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        // Rung before the task waits: nobody to wake, but the next poll is ready.
        assert!(bell.ring().is_none());
        assert!(bell.poll_rung(&mut cx).is_ready());
        // Not rung: the waker is stored, and the ring hands it back.
        assert!(bell.poll_rung(&mut cx).is_pending());
        bell.ring().expect("a waiting task").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(bell.poll_rung(&mut cx).is_ready());
        // Cleared: waiting again.
        assert!(bell.ring().is_none());
        bell.clear();
        assert!(bell.poll_rung(&mut cx).is_pending());
    }
}
