//! The tour: the pieces of an async runtime, one idea at a time, as the chapter walks them.
//!
//! 1. A future written by hand ([`oneshot`]'s [`Receiver`]) and polled by hand: `poll`
//!    returns `Pending` or `Ready`, and nothing happens in between unless somebody polls.
//! 2. Polling in a loop works but burns a core ([`busy_block_on`]); a [`Waker`] lets the
//!    future say when polling again is worth it ([`CountingWaker`] counts those calls).
//! 3. With the reactor, executor and `block_on` of this crate, an `async fn` ([`count`]) and
//!    the state machine the compiler turns it into ([`Count`], written by hand) run side by
//!    side and print the same thing: that is what `.await` compiles to.
//!
//! Every listing of the chapter is here or in the modules it names, and compiles with the
//! crate. Run the tour's tests with `cargo test -p chat-futures tour::`, and `count()` with
//! `cargo run -p chat-futures --example count`.

use std::future::Future;
use std::mem;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::Timer;

/// What a [`Sender`] and its [`Receiver`] share.
#[derive(Debug)]
struct Slot<T> {
    /// The value, once sent.
    value: Option<T>,
    /// The receiver's waker, left here by its last `Pending`.
    waker: Option<Waker>,
    /// The sender was dropped without sending: the receiver gets `None`.
    closed: bool,
}

/// Sends one value to its [`Receiver`], from any thread.
#[derive(Debug)]
pub struct Sender<T> {
    /// Shared with the receiver.
    slot: Arc<Mutex<Slot<T>>>,
}

/// A future: the value sent by the [`Sender`] (`None` if it was dropped without sending).
#[derive(Debug)]
pub struct Receiver<T> {
    /// Shared with the sender.
    slot: Arc<Mutex<Slot<T>>>,
}

/// A channel for one value: the smallest useful future that is not ready at once.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        closed: false,
    }));
    let sender = Sender {
        slot: Arc::clone(&slot),
    };
    (sender, Receiver { slot })
}

/// The lock of a slot; nothing can panic while holding it, so poisoning is ignored.
fn lock<T>(slot: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

// ANCHOR: oneshot
impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = lock(&self.slot);
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        // Not yet. Leave our waker, so that the sender can tell us when to poll again.
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Sender<T> {
    /// Hands over the value and wakes the receiver.
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = lock(&self.slot);
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake(); // "the result is available: poll me again"
        }
    }
}
// ANCHOR_END: oneshot

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = lock(&self.slot);
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A runtime without wakers: poll, and if the future is not ready, poll again at once.
/// It works, and keeps a core at 100% while it waits. Returns the output and how many polls
/// it took.
// ANCHOR: busy_block_on
pub fn busy_block_on<F: Future>(future: F) -> (F::Output, u64) {
    let mut future = pin!(future);
    // A waker that does nothing: we are not going to wait for it anyway.
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return (output, polls);
        }
    }
}
// ANCHOR_END: busy_block_on

/// A waker that counts how often it was called: for tests, and to watch wakers at work.
// ANCHOR: counting_waker
#[derive(Debug, Default)]
pub struct CountingWaker {
    /// Calls to `wake` or `wake_by_ref` so far.
    count: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    /// A `Waker` (what futures get, inside a `Context`) and the counter behind it.
    pub fn new() -> (Waker, Arc<CountingWaker>) {
        let counter = Arc::new(CountingWaker::default());
        (Waker::from(Arc::clone(&counter)), counter)
    }

    /// How many times it was woken.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
// ANCHOR_END: counting_waker

/// Says `One`, waits `pause` without blocking the thread, says `Two`: the articles'
/// `count()`, with `say` instead of `print` so that tests can read what it said.
// ANCHOR: count
pub async fn count(say: impl Fn(&'static str), pause: Duration) {
    say("One");
    Timer::after(pause).await;
    say("Two");
}
// ANCHOR_END: count

/// [`count`] with the mistake the articles warn about: a *blocking* sleep in an `async fn`.
/// It compiles and runs, and the thread (with every other task on it) sleeps too.
// ANCHOR: count_blocking
pub async fn count_blocking(say: impl Fn(&'static str), pause: Duration) {
    say("One");
    std::thread::sleep(pause); // no `.await`: never returns `Pending`, never lets go
    say("Two");
}
// ANCHOR_END: count_blocking

/// [`count`] compiled by hand: what the compiler generates for it, minus the details.
// ANCHOR: count_by_hand
#[derive(Debug)]
pub enum Count<S> {
    /// Created, not polled yet: holds the arguments.
    Start {
        /// The function to say things with.
        say: S,
        /// How long to wait.
        pause: Duration,
    },
    /// Stopped at the `.await`: holds what is still needed after it, and the awaited future.
    Waiting {
        /// Still needed to say `Two`.
        say: S,
        /// The future being awaited.
        timer: Timer,
    },
    /// Returned `Ready`: polling again is a bug.
    Done,
}

impl<S: Fn(&'static str) + Unpin> Future for Count<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match mem::replace(this, Count::Done) {
                // The code before the first `.await`, then move to the next state.
                Count::Start { say, pause } => {
                    say("One");
                    let timer = Timer::after(pause);
                    *this = Count::Waiting { say, timer };
                }
                // `.await` is this: poll the inner future; if it is pending, so are we
                // (its waker is our waker), and we stay in this state.
                Count::Waiting { say, mut timer } => match Pin::new(&mut timer).poll(cx) {
                    Poll::Pending => {
                        *this = Count::Waiting { say, timer };
                        return Poll::Pending;
                    }
                    Poll::Ready(()) => {
                        say("Two");
                        return Poll::Ready(());
                    }
                },
                Count::Done => panic!("`Count` polled after it returned `Ready`"),
            }
        }
    }
}
// ANCHOR_END: count_by_hand

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;
    use crate::{block_on, JoinHandle};
    use std::cell::RefCell;
    use std::future::poll_fn;
    use std::rc::Rc;

    // ANCHOR: by_hand
    #[test]
    fn a_future_polled_by_hand() {
        let (sender, receiver) = oneshot();
        let mut receiver = pin!(receiver);
        let mut cx = Context::from_waker(Waker::noop());
        // Nothing sent: the future says "not yet" and returns at once. It does not block.
        assert_eq!(receiver.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(receiver.as_mut().poll(&mut cx), Poll::Pending);
        sender.send("hello");
        // Nothing happened by itself; it is our next poll that finds the value.
        assert_eq!(receiver.as_mut().poll(&mut cx), Poll::Ready(Some("hello")));
    }
    // ANCHOR_END: by_hand

    // ANCHOR: waker_test
    #[test]
    fn the_sender_wakes_the_receiver_exactly_once() {
        let (sender, receiver) = oneshot();
        let mut receiver = pin!(receiver);
        let (waker, counter) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(receiver.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(counter.get(), 0, "pending futures do not wake themselves");
        // Send from another thread: wakers are `Send + Sync`.
        std::thread::spawn(move || sender.send(42))
            .join()
            .expect("sender thread");
        assert_eq!(counter.get(), 1);
        assert_eq!(receiver.as_mut().poll(&mut cx), Poll::Ready(Some(42)));
        assert_eq!(counter.get(), 1);
    }
    // ANCHOR_END: waker_test

    #[test]
    fn a_dropped_sender_ends_the_wait() {
        let (sender, receiver) = oneshot::<u8>();
        drop(sender);
        assert_eq!(block_on(receiver), None);
    }

    #[test]
    fn busy_polling_polls_many_times_block_on_twice() {
        let pause = Duration::from_millis(20);
        let ((), busy_polls) = busy_block_on(Timer::after(pause));
        eprintln!("busy_block_on: {busy_polls} polls for a {pause:?} timer");
        assert!(busy_polls > 1, "the busy loop polled {busy_polls} times");
        let polls = Rc::new(RefCell::new(0));
        let counted = Rc::clone(&polls);
        let mut timer = Timer::after(pause);
        block_on(poll_fn(|cx| {
            *counted.borrow_mut() += 1;
            Pin::new(&mut timer).poll(cx)
        }));
        assert_eq!(*polls.borrow(), 2, "once to register, once when woken");
    }

    /// Runs three copies of a `count`-like future made by `make` on one executor and returns
    /// everything they said, in order.
    fn three_counts<F: Future<Output = ()> + 'static>(
        make: impl Fn(Box<dyn Fn(&'static str)>) -> F,
    ) -> Vec<&'static str> {
        let said = Rc::new(RefCell::new(Vec::new()));
        let executor = Executor::new();
        let handles: Vec<JoinHandle<()>> = (0..3)
            .map(|_| {
                let said = Rc::clone(&said);
                executor.spawn(make(Box::new(move |word| said.borrow_mut().push(word))))
            })
            .collect();
        block_on(executor.run(async {
            for handle in handles {
                handle.await;
            }
        }));
        let said = said.borrow().clone();
        said
    }

    #[test]
    fn count_and_its_hand_compiled_twin_say_the_same() {
        let pause = Duration::from_millis(20);
        let expected = ["One", "One", "One", "Two", "Two", "Two"];
        assert_eq!(three_counts(|say| count(say, pause)), expected);
        assert_eq!(three_counts(|say| Count::Start { say, pause }), expected);
    }

    #[test]
    fn a_blocking_count_runs_the_three_one_after_the_other() {
        let pause = Duration::from_millis(5);
        let sequential = ["One", "Two", "One", "Two", "One", "Two"];
        assert_eq!(three_counts(|say| count_blocking(say, pause)), sequential);
    }
}
