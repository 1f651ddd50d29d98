//! A queue thread: one async task per tag on a local executor, driven by the queue's
//! io_uring. A task starts its request on the export and awaits the request's end, so a
//! request the device holds (suspended, delayed) holds no thread and the other tags go
//! on. The end may come from any thread: it leaves the result in the tag's slot and wakes
//! the task, and the task's waker also writes an eventfd that a poll on the ring is
//! waiting for, which brings the thread, parked in io_uring_enter, back to commit the
//! result (ublk takes a queue's commands from its own thread only). A request that ends
//! at once, on this thread, needs no wake-up.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use io_uring::{opcode, types};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::uring_async::wait_and_handle_io_events;
use libublk::{BufDesc, UblkError};

use crate::request::{self, Request};
use crate::{slot, Export};

/// An eventfd that wakes the queue thread.
struct Kick {
    file: File,
}

impl Kick {
    fn new() -> std::io::Result<Kick> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Kick {
            file: File::from(owned),
        })
    }

    fn notify(&self) {
        // Only fails (EAGAIN) when the counter is about to overflow: already pending.
        let _ = (&self.file).write(&1u64.to_ne_bytes());
    }

    fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = (&self.file).read(&mut b);
    }
}

/// Wakes the task, then the queue thread (in that order, so that the thread finds
/// the task runnable when it wakes).
struct KickWaker {
    inner: Waker,
    kick: Arc<Kick>,
}

impl Wake for KickWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.inner.wake_by_ref();
        self.kick.notify();
    }
}

/// A future completed on another thread, awaited from the queue thread.
struct Kicked<F> {
    fut: F,
    kick: Arc<Kick>,
}

impl<F: Future + Unpin> Future for Kicked<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(KickWaker {
            inner: cx.waker().clone(),
            kick: self.kick.clone(),
        }));
        let mut cx = Context::from_waker(&waker);
        Pin::new(&mut self.fut).poll(&mut cx)
    }
}

/// Serve queue `qid` of `dev` until the device stops.
pub(super) fn serve(qid: u16, dev: &UblkDev, export: Arc<dyn Export>) {
    let id = dev.dev_info.dev_id;
    // Without an eventfd nothing can wake this thread from another: each request's end
    // is waited for here (correct, but one request at a time).
    let kick = match Kick::new() {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            tracing::warn!(ublk = id, error = %e, "no eventfd: serving requests one at a time");
            None
        }
    };
    let q = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(ublk = id, qid, error = %e, "cannot set up the ublk queue");
            return;
        }
    };
    let exe = smol::LocalExecutor::new();
    let tasks: Vec<_> = q
        .tags()
        .map(|tag| {
            let (q, export, kick) = (q.clone(), export.clone(), kick.clone());
            exe.spawn(async move {
                match io_task(&q, tag, export, kick).await {
                    Ok(()) | Err(UblkError::QueueIsDown) => {}
                    Err(e) => tracing::warn!(ublk = id, qid, tag, error = %e, "ublk tag stopped"),
                }
            })
        })
        .collect();
    let _kick_task = kick.map(|k| {
        let q = q.clone();
        exe.spawn(async move { kick_loop(&q, &k).await })
    });
    let run_ops = || while exe.try_tick() {};
    let is_done = || tasks.iter().all(|t| t.is_finished());
    if let Err(e) = smol::block_on(wait_and_handle_io_events(&q, None, run_ops, is_done)) {
        tracing::warn!(ublk = id, qid, error = %e, "ublk queue ended");
    }
}

/// Keep a poll for the eventfd on the ring, so that a request ending on another
/// thread ends this thread's wait in io_uring_enter.
async fn kick_loop(q: &UblkQueue<'_>, kick: &Kick) {
    let fd = types::Fd(kick.file.as_raw_fd());
    loop {
        let res = q
            .ublk_submit_sqe(opcode::PollAdd::new(fd, libc::POLLIN as u32).build())
            .await;
        if res < 0 && res != -libc::EINTR {
            tracing::error!(
                error = %std::io::Error::from_raw_os_error(-res),
                "ublk queue: polling the wake-up eventfd failed"
            );
            return;
        }
        kick.drain();
    }
}

/// One tag: fetch a request, start it, await its end, commit the result and fetch the
/// next, until the queue goes down.
async fn io_task(
    q: &UblkQueue<'_>,
    tag: u16,
    export: Arc<dyn Export>,
    kick: Option<Arc<Kick>>,
) -> Result<(), UblkError> {
    let len = q.dev.dev_info.max_io_buf_bytes as usize;
    if len == 0 {
        return Err(UblkError::InvalidVal);
    }
    // The tag's buffer, which the kernel copies a request's data into and out of: this
    // task touches it only between a fetch's completion and the next commit, when the
    // kernel does not.
    let mut buf = IoBuf::<u8>::new(len);
    buf.zero_buf();
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    // The owned buffer a request's data travels in, reused by the tag's next request.
    let mut data = Vec::new();
    loop {
        let iod = q.get_iod(tag);
        let req = Request::decode(iod.op_flags, iod.start_sector, iod.nr_sectors);
        // An export that loses the request (drops its completion) fails it.
        let (filler, ended) = slot::slot((-libc::EIO, Vec::new()));
        request::serve(
            &*export,
            req,
            buf.as_slice(),
            std::mem::take(&mut data),
            move |res, d| filler.fill((res, d)),
        );
        let (res, back) = match &kick {
            Some(kick) => {
                Kicked {
                    fut: ended,
                    kick: kick.clone(),
                }
                .await
            }
            // Nothing can wake this thread from another: wait here (one request at a time).
            None => ended.wait(),
        };
        let res = request::finish(req, res, &back, buf.as_mut_slice());
        data = back;
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}
