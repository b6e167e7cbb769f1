//! A server connection's read pass, and the work deferred to its end.
//!
//! A connection decodes every whole frame of one read and takes each
//! request through its first step before it writes any answer. Work those
//! requests can share is queued here and done once when the pass ends,
//! before their answers go out: the log writes the records of all the
//! produces of a pass to a partition's file in one write, as redis writes
//! its append-only file once per event-loop pass. (The protocol crate
//! holds this because it is the one crate both the connection, weft-net,
//! and the work, weft-log, build on.)
//!
//! A pass belongs to a thread and never spans an await: the connection
//! ends it before it waits for anything, so nothing else runs on the
//! thread while it is open, and a request whose first step deferred work
//! is polled again after [`end`] has done it.

use std::cell::RefCell;
use std::sync::Arc;

/// Work done once at the end of a pass, however many requests of the pass
/// queued it.
pub trait PassWork: Send + Sync {
    fn end_of_pass(&self);
}

#[derive(Default)]
struct Pass {
    open: bool,
    work: Vec<Arc<dyn PassWork>>,
}

thread_local! {
    static PASS: RefCell<Pass> = RefCell::new(Pass::default());
}

/// Opens a pass on this thread (no-op if one is open).
pub fn begin() {
    PASS.with(|p| p.borrow_mut().open = true);
}

/// True while a pass is open on this thread: work may be deferred.
pub fn is_open() -> bool {
    PASS.with(|p| p.borrow().open)
}

/// Queues `work` for the end of the open pass; false (nothing queued)
/// when no pass is open, and the caller does the work itself now.
pub fn defer(work: Arc<dyn PassWork>) -> bool {
    PASS.with(|p| {
        let mut p = p.borrow_mut();
        if p.open {
            p.work.push(work);
        }
        p.open
    })
}

/// Closes the open pass if nothing was deferred in it yet: for the last
/// request of a read, which has no one to share its work with and does it
/// at once instead.
pub fn end_if_idle() {
    PASS.with(|p| {
        let mut p = p.borrow_mut();
        if p.work.is_empty() {
            p.open = false;
        }
    });
}

/// Closes the pass and does its work, in the order it was queued. Work
/// done here sees the pass closed, so what it starts is not deferred.
pub fn end() {
    let work = PASS.with(|p| {
        let mut p = p.borrow_mut();
        p.open = false;
        std::mem::take(&mut p.work)
    });
    for w in work {
        w.end_of_pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl PassWork for Count {
        fn end_of_pass(&self) {
            assert!(!is_open(), "work runs with the pass closed");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn work_waits_for_the_end_of_an_open_pass() {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        assert!(!is_open());
        assert!(!defer(c.clone()), "no pass: nothing is queued");
        begin();
        assert!(is_open());
        assert!(defer(c.clone()));
        assert!(defer(c.clone()));
        assert_eq!(c.0.load(Ordering::Relaxed), 0, "deferred, not done");
        end();
        assert_eq!(c.0.load(Ordering::Relaxed), 2);
        assert!(!is_open());
        end(); // nothing left: a second end does nothing
        assert_eq!(c.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_idle_pass_can_end_early_a_busy_one_cannot() {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        begin();
        end_if_idle();
        assert!(!is_open(), "nothing deferred: closed");
        begin();
        assert!(defer(c.clone()));
        end_if_idle();
        assert!(is_open(), "work deferred: stays open for its end");
        end();
        assert_eq!(c.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_pass_belongs_to_its_thread() {
        begin();
        let other = std::thread::spawn(is_open).join().unwrap();
        assert!(!other);
        end();
    }
}
