//! The executor: a set of tasks and a queue of the ones that were woken.
//!
//! A *task* is a future the executor owns and polls on its own (a boxed `Future<Output = ()>`
//! plus the waker that puts it back in the queue). [`Executor::spawn`] adds one and returns a
//! [`JoinHandle`] to await its output; [`Executor::run`] is a future that polls woken tasks
//! until the future it was given is done. A task is polled once when spawned and then only
//! after its waker was called: an idle task costs no CPU at all, only its memory.
//!
//! The executor knows nothing about sockets or time (that is the reactor's job), and it
//! does not sleep (that is [`block_on`](fn@crate::block_on)'s job). Like `async-executor`'s
//! `LocalExecutor`, it runs on one thread, so tasks need not be `Send`; their wakers still
//! are, as `std::task::Wake` requires, and waking a task from another thread works.
//!
//! Run its tests with `cargo test -p chat-futures executor::`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Wake, Waker};

/// The id of `run`'s own future, which is polled like a task but not owned by the executor.
const MAIN: u64 = 0;

/// Tasks polled in one go before `run` yields to `block_on`, so that the reactor gets to
/// look for new events even when tasks keep waking each other. Small, because a task that
/// yields (a client that floods) is queued again at once: every poll of it makes the other
/// clients, whose sockets the reactor has not looked at yet, wait longer. (tokio's
/// scheduler looks for I/O every 61 polls by default, its `event_interval`.)
const BUDGET: usize = 61;

/// Ids of woken tasks, shared by the executor and every task's waker (on any thread).
#[derive(Debug, Default)]
struct ReadyQueue {
    /// The queue and the waker of whoever runs the executor, behind one lock.
    inner: Mutex<ReadyInner>,
}

/// The part of [`ReadyQueue`] behind the lock.
#[derive(Debug, Default)]
struct ReadyInner {
    /// Woken tasks, oldest first. A task is in it at most once (see [`TaskWaker::queued`]).
    ids: VecDeque<u64>,
    /// Set when `run` found the queue empty and went to sleep: the next push wakes it.
    runner: Option<Waker>,
}

impl ReadyQueue {
    /// The lock. A panic while holding it cannot leave the queue half-changed, so a
    /// poisoned lock is still fine to use.
    fn lock(&self) -> MutexGuard<'_, ReadyInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a task, and wakes the runner if it is asleep.
    fn push(&self, id: u64) {
        let runner = {
            let mut inner = self.lock();
            inner.ids.push_back(id);
            inner.runner.take()
        };
        if let Some(runner) = runner {
            runner.wake(); // outside the lock: it may poke another thread
        }
    }

    /// The next woken task; or, if there is none, registers `runner` to be woken by the
    /// next push (in the same critical section, so no push can fall in between).
    fn pop_or_sleep(&self, runner: &Waker) -> Option<u64> {
        let mut inner = self.lock();
        let next = inner.ids.pop_front();
        if next.is_none() {
            match &mut inner.runner {
                Some(waker) if waker.will_wake(runner) => {}
                slot => *slot = Some(runner.clone()),
            }
        }
        next
    }
}

/// A task's waker: waking it queues the task's id, once.
// ANCHOR: task_waker
#[derive(Debug)]
struct TaskWaker {
    /// The task to queue.
    id: u64,
    /// True from the first `wake` until the executor starts polling the task: more wakes in
    /// between change nothing, so a task is never queued (or polled) twice for them.
    queued: AtomicBool,
    /// Where to queue it.
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}
// ANCHOR_END: task_waker

/// A spawned future, as the executor keeps it.
struct Task {
    /// The future; `None` while it is being polled (taken out, so that it may spawn).
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// The task's [`TaskWaker`], made once and cloned into each `Context`.
    waker: Arc<TaskWaker>,
}

/// A single-threaded executor.
// ANCHOR: executor
pub struct Executor {
    /// Every task that has not finished, by id. Ids are never reused, so a late wake for a
    /// finished task finds nothing and is ignored.
    tasks: RefCell<HashMap<u64, Task>>,
    /// Woken tasks, shared with their wakers.
    ready: Arc<ReadyQueue>,
    /// The id of the next spawned task.
    next_id: Cell<u64>,
    /// How many times a task (or `run`'s future) was polled, for tests and curiosity.
    polls: Cell<u64>,
}
// ANCHOR_END: executor

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.tasks.borrow().len())
            .field("ready", &self.ready)
            .field("polls", &self.polls.get())
            .finish()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with no tasks.
    pub fn new() -> Self {
        Self {
            tasks: RefCell::new(HashMap::new()),
            ready: Arc::new(ReadyQueue::default()),
            next_id: Cell::new(MAIN + 1),
            polls: Cell::new(0),
        }
    }

    /// Tasks not finished yet.
    pub fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// True when no task is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many polls this executor has made so far.
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// Adds a task and queues it for its first poll. The task runs whether or not the handle
    /// is kept: dropping the handle only forgets the output (as with `tokio::spawn`).
    // ANCHOR: spawn
    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
        let slot = Rc::new(RefCell::new(JoinSlot {
            output: None,
            waiter: None,
        }));
        // The task is the future plus a last step: hand the output to the handle.
        let task = Spawned {
            future,
            slot: Rc::clone(&slot),
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let waker = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(true),
            ready: Arc::clone(&self.ready),
        });
        let task = Task {
            future: Some(Box::pin(task)),
            waker,
        };
        self.tasks.borrow_mut().insert(id, task);
        self.ready.push(id);
        JoinHandle { slot }
    }
    // ANCHOR_END: spawn

    /// Polls one task, if it still exists. A finished task is removed (its future, and
    /// everything the future owned, is dropped at once).
    // ANCHOR: poll_task
    fn poll_task(&self, id: u64) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(&id) else {
                return; // finished already: a stale wake
            };
            let Some(future) = task.future.take() else {
                return; // being polled further up the stack: cannot happen on one thread
            };
            (future, Waker::from(Arc::clone(&task.waker)))
        };
        // From here on, a wake (even from inside this poll) queues the task again.
        if let Some(task) = self.tasks.borrow().get(&id) {
            task.waker.queued.store(false, Ordering::Release);
        }
        self.polls.set(self.polls.get() + 1);
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        let mut tasks = self.tasks.borrow_mut();
        match poll {
            Poll::Ready(()) => {
                tasks.remove(&id);
            }
            Poll::Pending => {
                if let Some(task) = tasks.get_mut(&id) {
                    task.future = Some(future);
                }
            }
        }
    }
    // ANCHOR_END: poll_task

    /// Runs tasks until `main` is done, and returns its output. `main` is polled like a task
    /// (only when woken) but stays in this future, so it may borrow from the caller.
    ///
    /// This is a future: `block_on(executor.run(main))` is a whole runtime.
    // ANCHOR: run
    pub async fn run<T>(&self, main: impl Future<Output = T>) -> T {
        let mut main = pin!(main);
        let main_waker = Arc::new(TaskWaker {
            id: MAIN,
            queued: AtomicBool::new(true),
            ready: Arc::clone(&self.ready),
        });
        let main_cx_waker = Waker::from(Arc::clone(&main_waker));
        self.ready.push(MAIN);
        poll_fn(|cx| {
            for _ in 0..BUDGET {
                // Nothing woken: return Pending; the next wake will wake `cx.waker()`.
                let Some(id) = self.ready.pop_or_sleep(cx.waker()) else {
                    return Poll::Pending;
                };
                if id != MAIN {
                    self.poll_task(id);
                    continue;
                }
                main_waker.queued.store(false, Ordering::Release);
                self.polls.set(self.polls.get() + 1);
                if let Poll::Ready(output) =
                    main.as_mut().poll(&mut Context::from_waker(&main_cx_waker))
                {
                    return Poll::Ready(output);
                }
            }
            // Still busy: let `block_on` collect I/O events, then come straight back.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }
    // ANCHOR_END: run
}

/// A spawned future plus its last step: hand the output to the [`JoinHandle`].
///
/// (An `async move { let output = future.await; ... }` block would read better, but the
/// compiler stores a captured future twice in such a block, once as captured and once as
/// awaited: every task would be twice the size of its future.)
struct Spawned<F: Future> {
    /// The spawned future.
    future: F,
    /// Where its output goes.
    slot: Rc<RefCell<JoinSlot<F::Output>>>,
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of `future`: it is never moved out of a `Spawned` (no
        // method hands it out by value, and there is no `Drop` impl), so a pinned `Spawned`
        // pins it. `slot` is not pinned: it is only borrowed.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let output = ready!(future.poll(cx));
        let mut slot = this.slot.borrow_mut();
        slot.output = Some(output);
        if let Some(waiter) = slot.waiter.take() {
            waiter.wake();
        }
        Poll::Ready(())
    }
}

/// The output of a spawned task, once it is done.
#[derive(Debug)]
struct JoinSlot<T> {
    /// Set when the task finishes.
    output: Option<T>,
    /// The task awaiting the handle, woken when `output` is set.
    waiter: Option<Waker>,
}

/// A spawned task's output, as a future. Dropping it lets the task run on, detached.
#[derive(Debug)]
pub struct JoinHandle<T> {
    /// Shared with the task's last step, which fills it.
    slot: Rc<RefCell<JoinSlot<T>>>,
}

impl<T> JoinHandle<T> {
    /// Lets the task run without anybody waiting for it (the same as dropping the handle,
    /// but says so).
    pub fn detach(self) {}
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.borrow_mut();
        match slot.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                slot.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;
    use crate::combinators::yield_now;
    use crate::tour::oneshot;

    /// Sets its flag when dropped: shows when a task's future is freed.
    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[test]
    fn spawned_tasks_complete_and_hand_back_their_output() {
        let executor = Executor::new();
        let sum = block_on(executor.run(async {
            let handles: Vec<_> = (1..=10)
                .map(|i| executor.spawn(async move { i * i }))
                .collect();
            let mut sum = 0;
            for handle in handles {
                sum += handle.await;
            }
            sum
        }));
        assert_eq!(sum, 385);
        assert!(executor.is_empty(), "finished tasks are removed");
    }

    #[test]
    fn a_finished_task_is_freed_at_once() {
        let executor = Executor::new();
        let dropped = Rc::new(Cell::new(false));
        let flag = DropFlag(Rc::clone(&dropped));
        let (sender, receiver) = oneshot::<()>();
        let handle = executor.spawn(async move {
            let _flag = flag; // owned by the task's future
            receiver.await;
        });
        block_on(executor.run(yield_now()));
        assert_eq!(
            (executor.len(), dropped.get()),
            (1, false),
            "waiting, alive"
        );
        sender.send(());
        block_on(executor.run(handle));
        assert_eq!((executor.len(), dropped.get()), (0, true));
    }

    #[test]
    fn dropping_the_executor_drops_its_pending_tasks() {
        let dropped = Rc::new(Cell::new(false));
        let (_sender, receiver) = oneshot::<()>();
        let flag = DropFlag(Rc::clone(&dropped));
        let executor = Executor::new();
        executor
            .spawn(async move {
                let _flag = flag;
                receiver.await; // never sent
            })
            .detach();
        block_on(executor.run(yield_now()));
        assert!(!dropped.get());
        drop(executor);
        assert!(dropped.get());
    }

    #[test]
    fn a_task_is_polled_only_when_woken_and_once_per_wake() {
        let executor = Executor::new();
        let (sender, receiver) = oneshot::<u32>();
        let polls = Rc::new(Cell::new(0));
        let counted = Rc::clone(&polls);
        let mut receiver = Box::pin(receiver);
        let handle = executor.spawn(poll_fn(move |cx| {
            counted.set(counted.get() + 1);
            receiver.as_mut().poll(cx)
        }));
        // Let it reach its await, then spin the executor through other work.
        block_on(executor.run(async {
            for _ in 0..100 {
                yield_now().await;
            }
        }));
        assert_eq!(
            polls.get(),
            1,
            "polled once when spawned, never again while unwoken"
        );
        sender.send(7); // wakes it, once
        assert_eq!(block_on(executor.run(handle)), Some(7));
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn many_wakes_before_a_poll_queue_the_task_once() {
        let executor = Executor::new();
        let polls = Rc::new(Cell::new(0));
        let woken = Rc::new(RefCell::new(None::<Waker>));
        let (counted, stash) = (Rc::clone(&polls), Rc::clone(&woken));
        executor
            .spawn(poll_fn(move |cx| {
                counted.set(counted.get() + 1);
                *stash.borrow_mut() = Some(cx.waker().clone());
                Poll::<()>::Pending
            }))
            .detach();
        block_on(executor.run(yield_now()));
        assert_eq!(polls.get(), 1);
        let waker = woken
            .borrow_mut()
            .take()
            .expect("the task stored its waker");
        waker.wake_by_ref();
        waker.wake_by_ref();
        let other_thread = waker.clone();
        std::thread::spawn(move || other_thread.wake())
            .join()
            .expect("waking thread");
        block_on(executor.run(yield_now()));
        assert_eq!(polls.get(), 2, "three wakes, one poll");
    }

    #[test]
    fn a_task_that_never_waits_does_not_starve_the_others() {
        let executor = Executor::new();
        executor
            .spawn(async {
                loop {
                    yield_now().await; // always runnable
                }
            })
            .detach();
        let finished = block_on(executor.run(async {
            let a = executor.spawn(async { "a" });
            a.await
        }));
        assert_eq!(finished, "a");
    }
}
