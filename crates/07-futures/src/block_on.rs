//! [`block_on`]: the loop at the bottom of every async program. It polls one future; while
//! that future is pending, it lets the reactor sleep.
//!
//! This is the only place where the thread actually waits, and the only code that knows both
//! "a future" and "the reactor". It does not know what a task is: the executor's
//! [`run`](crate::executor::Executor::run) is just another future to it. The two meet
//! through the [`Waker`] that `block_on` passes down: whoever calls it (a task that became
//! runnable, a timer, another thread) sets a flag, and the loop polls again.
//!
//! Run it with `cargo test -p chat-futures block_on::`.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};

use crate::reactor::Reactor;
use crate::sys::EventFd;

/// What `block_on`'s waker does: raise a flag, and if the caller is another thread (so our
/// thread may be asleep in `epoll_wait`), poke the reactor's eventfd to wake it up.
// ANCHOR: signal
#[derive(Debug)]
struct Signal {
    /// Set by `wake`, cleared by the loop before it polls.
    woken: AtomicBool,
    /// The thread running `block_on`.
    owner: ThreadId,
    /// Ends that thread's `epoll_wait` early.
    notifier: Arc<EventFd>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let was_woken = self.woken.swap(true, Ordering::AcqRel);
        // On our own thread we are running, not sleeping: the flag is enough. From another
        // thread, we may be inside `epoll_wait`, which only a descriptor event can end.
        if !was_woken && thread::current().id() != self.owner {
            self.notifier.notify();
        }
    }
}
// ANCHOR_END: signal

/// Runs `future` to completion on this thread, sleeping in the reactor whenever it is pending.
// ANCHOR: block_on
pub fn block_on<F: Future>(future: F) -> F::Output {
    let reactor = Reactor::get();
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        owner: thread::current().id(),
        notifier: reactor.notifier(),
    });
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Pending. If nobody called our waker yet, nothing can happen until an event does:
        // sleep in the kernel. If someone did (more work is queued), only collect events.
        let mut block = !signal.woken.load(Ordering::Acquire);
        loop {
            reactor
                .react(block)
                .expect("epoll_wait fails only on a bad descriptor or buffer: a bug here");
            if signal.woken.swap(false, Ordering::AcqRel) {
                break; // poll again
            }
            block = true;
        }
    }
}
// ANCHOR_END: block_on

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tour::oneshot;
    use std::time::Duration;

    #[test]
    fn a_ready_future_is_polled_once() {
        let reactor = Reactor::get();
        let before = reactor.reactions();
        assert_eq!(block_on(async { 40 + 2 }), 42);
        assert_eq!(reactor.reactions(), before, "never slept");
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_sleep() {
        let (sender, receiver) = oneshot();
        let other = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            sender.send("from afar");
        });
        // The receiver registers nothing in the reactor: only the eventfd poke can end the
        // sleep before the safety-net timer does (polled first, so it wins if it fired).
        let safety_net = async {
            crate::Timer::after(Duration::from_secs(10)).await;
            None
        };
        let got = block_on(crate::or(safety_net, receiver));
        assert_eq!(got, Some("from afar"));
        other.join().expect("sender thread");
    }
}
