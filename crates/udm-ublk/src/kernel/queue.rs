//! A queue thread: one async task per tag on a local executor, driven by the queue's
//! io_uring. A request runs on the blocking thread pool, so a request held by a
//! suspended device does not hold up the others; when it completes, its waker also
//! writes an eventfd that a poll on the ring is waiting for, which brings the thread,
//! parked in io_uring_enter, back to commit the result.

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
use crate::Export;

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
    // Without an eventfd, requests are served on this thread (correct, but one at a time).
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

/// Keep a poll for the eventfd on the ring, so that a completion on the blocking
/// pool ends the thread's wait in io_uring_enter.
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

/// One tag: fetch a request, serve it, commit the result and fetch the next, until
/// the queue goes down.
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
    let mut buf = IoBuf::<u8>::new(len);
    buf.zero_buf();
    let buf = Arc::new(buf);
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    loop {
        let iod = q.get_iod(tag);
        let req = Request::decode(iod.op_flags, iod.start_sector, iod.nr_sectors);
        let res = match &kick {
            Some(kick) => {
                let (export, buf) = (export.clone(), buf.clone());
                Kicked {
                    fut: smol::unblock(move || serve_into(&*export, req, &buf)),
                    kick: kick.clone(),
                }
                .await
            }
            None => serve_into(&*export, req, &buf),
        };
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}

fn serve_into(export: &dyn Export, req: Request, buf: &IoBuf<u8>) -> i32 {
    // SAFETY: the buffer belongs to one tag, and nothing else touches it now: the
    // kernel copies into it only before completing the tag's FETCH and out of it only
    // after our COMMIT, and the tag's task awaits this call in between. It is `len()`
    // bytes long and was zeroed at allocation; the Arc keeps it alive meanwhile.
    let data = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr(), buf.len()) };
    request::serve(export, req, data)
}
