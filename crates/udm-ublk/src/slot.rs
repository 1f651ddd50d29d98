//! Where a request's completion leaves its result for the tag that waits for it: filled
//! once, from whichever thread ends the request, and awaited by the tag's task on the
//! queue thread (or waited for with the thread blocked, when the queue thread has no way
//! to be woken). A filler dropped unfilled (an export that lost its request) fills in
//! its fallback value, so that a tag never waits forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing can panic while the lock is held, but a poisoned state is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The completion's end: fills the slot once.
pub(crate) struct Filler<T> {
    shared: Option<Arc<Shared<T>>>,
    fallback: Option<T>,
}

/// The waiting end.
pub(crate) struct Slot<T> {
    shared: Arc<Shared<T>>,
}

/// A new slot; `fallback` is what it holds if the filler is dropped unfilled.
pub(crate) fn slot<T>(fallback: T) -> (Filler<T>, Slot<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: None,
            waker: None,
        }),
        cv: Condvar::new(),
    });
    (
        Filler {
            shared: Some(Arc::clone(&shared)),
            fallback: Some(fallback),
        },
        Slot { shared },
    )
}

impl<T> Filler<T> {
    pub(crate) fn fill(mut self, value: T) {
        self.fallback = None;
        self.put(value);
    }

    fn put(&mut self, value: T) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let waker = {
            let mut st = shared.lock();
            st.value = Some(value);
            st.waker.take()
        };
        shared.cv.notify_all();
        // Woken outside the lock: the waker may run the task (or kick a thread) at once.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Filler<T> {
    fn drop(&mut self) {
        if let Some(v) = self.fallback.take() {
            self.put(v);
        }
    }
}

impl<T> Slot<T> {
    /// Block this thread until the slot is filled.
    pub(crate) fn wait(self) -> T {
        let mut st = self.shared.lock();
        loop {
            if let Some(v) = st.value.take() {
                return v;
            }
            st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T> Future for Slot<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.shared.lock();
        if let Some(v) = st.value.take() {
            return Poll::Ready(v);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn filled_from_another_thread_wakes_the_task() {
        let (filler, mut waiting) = slot(-1);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut waiting).poll(&mut cx).is_pending());
        std::thread::spawn(move || filler.fill(7)).join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut waiting).poll(&mut cx), Poll::Ready(7));
    }

    #[test]
    fn filled_before_the_first_poll_needs_no_wake() {
        let (filler, mut waiting) = slot(-1);
        filler.fill(3);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(Pin::new(&mut waiting).poll(&mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_blocked_waiter_gets_the_value_or_the_fallback() {
        let (filler, waiting) = slot(-1);
        let t = std::thread::spawn(move || waiting.wait());
        std::thread::sleep(std::time::Duration::from_millis(20));
        filler.fill(5);
        assert_eq!(t.join().unwrap(), 5);

        let (filler, waiting) = slot(-1);
        drop(filler);
        assert_eq!(waiting.wait(), -1);
    }
}
