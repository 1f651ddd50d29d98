//! How an export answers a request it was handed ([`Export::submit`]): a [`Done`].
//!
//! A request answered before `submit` returns, on the thread that submitted it, is
//! the fast path: its answer is left in a thread-local slot for the submitting
//! worker, which sends it with the other replies of its batch in one write, exactly
//! as when exports were only blocking. Any other answer (from a timer, a pool
//! thread, a resume) sends its own reply from the thread that completes it, under
//! the connection's writer lock, and gives the buffer back to the connection.
//!
//! [`Export::submit`]: crate::Export::submit

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::check::Request;
use super::Handle;
use crate::export::Errno;

/// The answer to one request started with [`Export::submit`](crate::Export::submit).
/// Call [`Done::complete`] exactly once, from any thread; dropping it unanswered
/// answers EIO.
pub struct Done(Inner);

enum Inner {
    /// Already answered.
    Spent,
    /// A request of a connection.
    Server(Pending),
    /// A caller's own callback ([`Done::new`]).
    Call(Callback),
}

type Callback = Box<dyn FnOnce(Result<(), Errno>, Vec<u8>) + Send>;

/// A connection's request in flight. It holds the session, and with it the socket
/// and the budget, until it is answered: nothing of the connection is closed or
/// reused under it.
pub(super) struct Pending {
    session: Arc<Handle>,
    req: Request,
    key: Key,
    /// Capacity of the request's buffer counted in the connection's budget.
    counted: usize,
}

impl Done {
    /// A completion that calls `f` with the result and the buffer: for driving an
    /// [`Export`](crate::Export) outside the server (tests, adapters).
    pub fn new<F>(f: F) -> Done
    where
        F: FnOnce(Result<(), Errno>, Vec<u8>) + Send + 'static,
    {
        Done(Inner::Call(Box::new(f)))
    }

    pub(super) fn server(session: Arc<Handle>, req: Request, key: Key, counted: usize) -> Done {
        Done(Inner::Server(Pending {
            session,
            req,
            key,
            counted,
        }))
    }

    /// Answer the request with `result`, giving the buffer back (for a read, holding
    /// the data read).
    pub fn complete(mut self, result: Result<(), Errno>, buf: Vec<u8>) {
        self.finish(result, Some(buf));
    }

    fn finish(&mut self, result: Result<(), Errno>, buf: Option<Vec<u8>>) {
        match std::mem::replace(&mut self.0, Inner::Spent) {
            Inner::Spent => {}
            Inner::Call(f) => f(result, buf.unwrap_or_default()),
            Inner::Server(p) => p.finish(result, buf),
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        // An export that lost the request must not leave the client waiting.
        self.finish(Err(Errno::EIO), None);
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.0 {
            Inner::Spent => "answered",
            Inner::Server(_) => "request",
            Inner::Call(_) => "callback",
        };
        f.debug_tuple("Done").field(&what).finish()
    }
}

impl Pending {
    fn finish(self, result: Result<(), Errno>, buf: Option<Vec<u8>>) {
        let result = result.map_err(|e| self.session.fail(&self.req, e));
        let mut answer = Some(Answer { result, buf });
        // On the submitting thread, inside its submit: leave the answer for it.
        let _ = LOCAL.try_with(|l| {
            if l.submitting.get() == Some(self.key) {
                *l.answer.borrow_mut() = answer.take();
            }
        });
        if let Some(a) = answer {
            self.session
                .answer_later(&self.req, a.result, a.buf, self.counted);
        }
    }
}

/// A request's answer, as the submitting worker finds it.
pub(super) struct Answer {
    pub result: Result<(), u32>,
    /// The buffer given back (none when the export dropped the request).
    pub buf: Option<Vec<u8>>,
}

/// Which request a thread is submitting: (thread number, sequence on that thread),
/// unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key(u64, u64);

static THREADS: AtomicU64 = AtomicU64::new(1);

struct Local {
    thread: u64,
    seq: Cell<u64>,
    submitting: Cell<Option<Key>>,
    answer: RefCell<Option<Answer>>,
}

thread_local! {
    static LOCAL: Local = Local {
        thread: THREADS.fetch_add(1, Ordering::Relaxed),
        seq: Cell::new(0),
        submitting: Cell::new(None),
        answer: RefCell::new(None),
    };
}

/// This thread is about to submit a request: its key, for the request's [`Done`].
pub(super) fn begin() -> Key {
    LOCAL
        .try_with(|l| {
            let seq = l.seq.get().wrapping_add(1);
            l.seq.set(seq);
            let key = Key(l.thread, seq);
            l.submitting.set(Some(key));
            key
        })
        // Only while the thread exits: no answer can be taken inline then.
        .unwrap_or(Key(0, 0))
}

/// The submit returned: the answer if the request was answered meanwhile on this
/// thread, else `None` (it is in flight, and its completion will answer).
pub(super) fn end() -> Option<Answer> {
    LOCAL
        .try_with(|l| {
            l.submitting.set(None);
            l.answer.borrow_mut().take()
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_callback_done_gets_the_result_and_the_buffer_or_eio() {
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        Done::new(move |r, b| tx.send((r, b)).unwrap()).complete(Ok(()), vec![7; 3]);
        assert_eq!(rx.recv().unwrap(), (Ok(()), vec![7; 3]));
        drop(Done::new(move |r, b| tx2.send((r, b)).unwrap()));
        assert_eq!(rx.recv().unwrap(), (Err(Errno::EIO), Vec::new()));
    }

    #[test]
    fn keys_are_unique_per_thread_and_cleared() {
        let a = begin();
        assert!(end().is_none());
        let b = begin();
        assert_ne!(a, b);
        let other = std::thread::spawn(begin).join().unwrap();
        assert_ne!(other.0, b.0);
        end();
        LOCAL.with(|l| assert_eq!(l.submitting.get(), None));
    }
}
