//! Two small futures every runtime ships and the chat server needs: [`or`] (wait for whichever
//! of two futures finishes first, like `select!` or asyncio's `wait(FIRST_COMPLETED)`) and
//! [`yield_now`] (let the other tasks run).
//!
//! `yield_now` is an `async fn` around `std::future::poll_fn`. `or` is a struct: as an
//! `async fn` that `pin!`s its two arguments, it would store each of them twice (the argument,
//! then the pinned copy), and every task awaiting an `or` would be twice as big as it needs to
//! be. A struct holds them once, at the price of a small `unsafe` pin projection.
//!
//! Run their tests with `cargo test -p chat-futures combinators::`.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `a`, then `b`, and returns the output of the first to finish; the other is dropped
/// (cancelled: a future that is not polled does nothing, and dropping it unregisters it).
// ANCHOR: or
pub fn or<T, A, B>(a: A, b: B) -> Or<A, B>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    Or { a, b }
}

/// The future [`or`] returns: both futures, side by side.
#[derive(Debug)]
pub struct Or<A, B> {
    /// Polled first, so it wins when both are ready.
    a: A,
    /// Polled when `a` is pending.
    b: B,
}

impl<T, A, B> Future for Or<A, B>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // SAFETY: structural pinning, as `pin-project` would generate it: `a` and `b` are
        // never moved out of an `Or` (no method hands them out by value, there is no `Drop`
        // impl, and `Or` is `Unpin` only when both are), so a pinned `Or` pins them too.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this.a` is pinned along with `self`, see above.
        if let Poll::Ready(output) = unsafe { Pin::new_unchecked(&mut this.a) }.poll(cx) {
            return Poll::Ready(output);
        }
        // Both are polled with the same waker: whichever is woken, this task runs again.
        // SAFETY: as for `a`.
        unsafe { Pin::new_unchecked(&mut this.b) }.poll(cx)
    }
}
// ANCHOR_END: or

/// Returns `Pending` once, after waking itself: the task goes to the back of the queue and
/// every task woken before it runs first.
// ANCHOR: yield_now
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
// ANCHOR_END: yield_now

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tour::{oneshot, CountingWaker};
    use crate::{block_on, Timer};
    use std::time::Duration;

    #[test]
    fn or_returns_the_first_to_finish_and_drops_the_other() {
        let reactor = crate::reactor::Reactor::get();
        let timers = reactor.timers();
        let (_never_sent, never) = oneshot::<&str>();
        let winner = block_on(or(
            async {
                never.await;
                "never"
            },
            async {
                Timer::after(Duration::from_millis(5)).await;
                "timer"
            },
        ));
        assert_eq!(winner, "timer");
        // The long timer is polled (registered) first, then loses to the short one.
        let winner = block_on(or(
            async {
                Timer::after(Duration::from_secs(3600)).await;
                "late"
            },
            async {
                Timer::after(Duration::from_millis(5)).await;
                "soon"
            },
        ));
        assert_eq!(winner, "soon");
        assert_eq!(
            reactor.timers(),
            timers,
            "the losing timer was dropped and unregistered"
        );
    }

    #[test]
    fn yield_now_wakes_itself_once() {
        let (waker, count) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut future = Box::pin(yield_now());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.get(), 1);
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }
}
