//! Per-identity limits against abuse (`auth.rate_per_s`, `auth.bytes_per_s`):
//! a GCRA rate limiter (the `governor` crate) per user, one for requests and
//! one for bytes, each with a burst of one second's worth. Keyed by the
//! user name (an `Arc<str>` clone, no allocation once the user is known).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{Quota, RateLimiter};

type Keyed = RateLimiter<Arc<str>, governor::state::keyed::HashMapStateStore<Arc<str>>, governor::clock::DefaultClock>;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Rate { per_s: u32 },
    Bytes { per_s: u32 },
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limited::Rate { per_s } => write!(f, "over this identity's limit of {per_s} requests/s (auth.rate_per_s); retry later"),
            Limited::Bytes { per_s } => write!(f, "over this identity's limit of {per_s} bytes/s (auth.bytes_per_s); retry later"),
        }
    }
}

/// The limiters; `None` limits are off.
pub struct Limits {
    rate: Option<(Keyed, u32)>,
    bytes: Option<(Keyed, u32)>,
    pub limited_rate: AtomicU64,
    pub limited_bytes: AtomicU64,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("rate", &self.rate.as_ref().map(|r| r.1)).field("bytes", &self.bytes.as_ref().map(|b| b.1)).finish()
    }
}

fn limiter(per_s: u64) -> Option<(Keyed, u32)> {
    let n = u32::try_from(per_s).unwrap_or(u32::MAX);
    NonZeroU32::new(n).map(|nz| (RateLimiter::hashmap(Quota::per_second(nz)), n))
}

impl Limits {
    /// 0 turns a limit off.
    pub fn new(rate_per_s: u64, bytes_per_s: u64) -> Self {
        Limits { rate: limiter(rate_per_s), bytes: limiter(bytes_per_s), limited_rate: AtomicU64::new(0), limited_bytes: AtomicU64::new(0) }
    }

    pub fn is_off(&self) -> bool {
        self.rate.is_none() && self.bytes.is_none()
    }

    /// Count one request of `bytes` against `user`'s limits.
    pub fn check(&self, user: &Arc<str>, bytes: usize) -> Result<(), Limited> {
        if let Some((l, per_s)) = &self.rate
            && l.check_key(user).is_err()
        {
            self.limited_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Limited::Rate { per_s: *per_s });
        }
        if let Some((l, per_s)) = &self.bytes {
            // A request larger than a whole second's budget can never pass:
            // it is charged the whole budget instead of refused forever.
            let n = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, *per_s);
            let ok = NonZeroU32::new(n).is_some_and(|n| matches!(l.check_key_n(user, n), Ok(Ok(()))));
            if !ok {
                self.limited_bytes.fetch_add(1, Ordering::Relaxed);
                return Err(Limited::Bytes { per_s: *per_s });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_bytes() {
        let l = Limits::new(3, 0);
        let u: Arc<str> = Arc::from("u");
        let v: Arc<str> = Arc::from("v");
        let passed = (0..10).filter(|_| l.check(&u, 10).is_ok()).count();
        assert!((3..10).contains(&passed), "{passed}");
        assert!(l.check(&v, 10).is_ok(), "limits are per identity");
        let b = Limits::new(0, 100);
        assert!(b.check(&u, 60).is_ok());
        assert_eq!(b.check(&u, 60), Err(Limited::Bytes { per_s: 100 }));
        assert!(Limits::new(0, 0).is_off());
    }
}
