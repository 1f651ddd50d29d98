//! `delay <dev> <off> <ms> [<wdev> <woff> <wms> [<fdev> <foff> <fms>]]`: every bio
//! is remapped as linear would, and held for its class's delay first (reads; writes,
//! discards and write-zeroes; flushes). With 3 arguments one set serves all, with
//! 6 the second serves writes and flushes. A held bio holds no thread: it waits in
//! the target's queue for the timer. Presuspend sends everything held at once and
//! stops delaying until resume.
//! INFO is `<reads> <writes> <flushes>` held now; TABLE prints each given set as
//! `<dev> <off> <ms>`; IMA is empty (6.12 has none).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use udm_core::{
    issue, ArgReader, Bio, BlockDev, Mapped, Op, Sector, Services, StatusType, TableError, Target,
    TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "delay",
    version: [1, 4, 0],
    ctr,
};

const READ: usize = 0;
const WRITE: usize = 1;
const FLUSH: usize = 2;

struct Class {
    dev: Arc<dyn BlockDev>,
    offset: Sector,
    delay_ms: u32,
}

struct Held {
    bio: Bio,
    class: usize,
    sector: Sector,
    expires: Instant,
}

#[derive(Default)]
struct Queue {
    /// One queue per class: a class has one delay, so each is in expiry order.
    held: [VecDeque<Held>; 3],
    /// The earliest time a timer is already set for.
    armed: Option<Instant>,
}

struct State {
    classes: [Class; 3],
    q: parking_lot::Mutex<Queue>,
    may_delay: AtomicBool,
    services: Services,
    me: Weak<State>,
}

pub struct Delay {
    state: Arc<State>,
    /// 3, 6 or 9: how many argument sets the table gave.
    argc: usize,
}

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    if !matches!(args.len(), 3 | 6 | 9) {
        return Err(ctx.err("requires exactly 3, 6 or 9 arguments"));
    }
    let mut rd = ArgReader::new(ctx, args);
    let class = |rd: &mut ArgReader<'_, '_>| -> Result<Class, TableError> {
        let (dev, offset, _) = rd.next_device(ctx.len)?;
        let ms = rd.next_str("delay")?;
        let delay_ms = udm_core::args::parse_u32(ms)
            .ok_or_else(|| rd.err_last("delay", format!("invalid delay '{ms}'")))?;
        Ok(Class {
            dev,
            offset,
            delay_ms,
        })
    };
    let read = class(&mut rd)?;
    let write = if args.len() >= 6 {
        class(&mut rd)?
    } else {
        same(&read)
    };
    let flush = if args.len() == 9 {
        class(&mut rd)?
    } else {
        same(&write)
    };
    rd.finish()?;
    let state = Arc::new_cyclic(|me| State {
        classes: [read, write, flush],
        q: parking_lot::Mutex::new(Queue::default()),
        may_delay: AtomicBool::new(true),
        services: ctx.services.clone(),
        me: me.clone(),
    });
    Ok(Box::new(Delay {
        state,
        argc: args.len(),
    }))
}

fn same(c: &Class) -> Class {
    Class {
        dev: Arc::clone(&c.dev),
        offset: c.offset,
        delay_ms: c.delay_ms,
    }
}

impl State {
    /// Take every held bio that expired by `now` (all of them with `all`), and set
    /// a timer for the next one.
    fn take_expired(&self, now: Instant, all: bool) -> Vec<Held> {
        let mut q = self.q.lock();
        let mut out = Vec::new();
        for h in q.held.iter_mut() {
            while h.front().is_some_and(|x| all || x.expires <= now) {
                if let Some(x) = h.pop_front() {
                    out.push(x);
                }
            }
        }
        q.armed = None;
        let next = q
            .held
            .iter()
            .filter_map(|h| h.front().map(|x| x.expires))
            .min();
        if let Some(at) = next {
            self.arm(&mut q, at);
        }
        out
    }

    fn arm(&self, q: &mut Queue, at: Instant) {
        if q.armed.is_some_and(|a| a <= at) {
            return;
        }
        q.armed = Some(at);
        let me = self.me.clone();
        self.services.schedule(at, move || {
            if let Some(s) = me.upgrade() {
                let due = s.take_expired(Instant::now(), false);
                if !due.is_empty() {
                    let s2 = Arc::clone(&s);
                    s.services.spawn(move || s2.send(due));
                }
            }
        });
    }

    /// Pass held bios on to their devices.
    fn send(&self, due: Vec<Held>) {
        for h in due {
            issue(&*self.classes[h.class].dev, h.bio, h.sector);
        }
    }
}

impl Target for Delay {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let class = match bio.op {
            Op::Read => READ,
            Op::Flush => FLUSH,
            _ => WRITE,
        };
        let c = &self.state.classes[class];
        let sector = c.offset + bio.sector;
        if c.delay_ms == 0 || !self.state.may_delay.load(Ordering::SeqCst) {
            return Mapped::Remap(bio, &*c.dev, sector);
        }
        let expires = Instant::now() + Duration::from_millis(u64::from(c.delay_ms));
        let mut q = self.state.q.lock();
        // Checked again under the lock: presuspend empties the queue under it.
        if !self.state.may_delay.load(Ordering::SeqCst) {
            drop(q);
            return Mapped::Remap(bio, &*c.dev, sector);
        }
        q.held[class].push_back(Held {
            bio,
            class,
            sector,
            expires,
        });
        self.state.arm(&mut q, expires);
        Mapped::Submitted
    }

    fn presuspend(&self) {
        self.state.may_delay.store(false, Ordering::SeqCst);
        let all = self.state.take_expired(Instant::now(), true);
        self.state.send(all);
    }

    fn resume(&self) {
        self.state.may_delay.store(true, Ordering::SeqCst);
    }

    fn status(&self, kind: StatusType, out: &mut String) {
        match kind {
            StatusType::Info => {
                let q = self.state.q.lock();
                out.push_str(&format!(
                    "{} {} {}",
                    q.held[READ].len(),
                    q.held[WRITE].len(),
                    q.held[FLUSH].len()
                ));
            }
            StatusType::Table => {
                let sets = self.argc / 3;
                for (i, c) in self.state.classes.iter().take(sets).enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&format!(
                        "{} {} {}",
                        c.dev.display_name(),
                        c.offset,
                        c.delay_ms
                    ));
                }
            }
            StatusType::Ima => {}
        }
    }

    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        let sets = self.argc / 3;
        self.state
            .classes
            .iter()
            .take(sets)
            .map(|c| Arc::clone(&c.dev))
            .collect()
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        // Nothing should be held (suspend flushed it); whatever is left is sent on.
        let left = self.state.take_expired(Instant::now(), true);
        self.state.send(left);
    }
}
