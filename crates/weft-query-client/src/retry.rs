//! Retries of idempotent calls: exponential back-off with jitter, as a
//! tower `retry::Policy`. A call that is not idempotent is never cloned,
//! so tower's `Retry` cannot send it twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::call::Call;
use crate::clock::Clock;
use crate::config::RetryConfig;
use crate::error::Error;

/// The back-off before retry number `attempt` (0 for the first retry):
/// `initial * multiplier^attempt`, capped at `max`, minus up to `jitter` of
/// it chosen by `r` in `[0, 1)`.
pub fn backoff(cfg: &RetryConfig, attempt: u32, r: f64) -> Duration {
    let exp = cfg.multiplier.max(1.0).powi(attempt.min(64) as i32);
    let full = (cfg.initial_backoff_ms as f64 * exp).min(cfg.max_backoff_ms as f64).max(0.0);
    let cut = full * cfg.jitter.clamp(0.0, 1.0) * r.clamp(0.0, 1.0);
    Duration::from_micros(((full - cut) * 1000.0) as u64)
}

/// The tower retry policy. Cloned per call by `tower::retry::Retry`, so
/// `attempt` counts the retries of one call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    cfg: RetryConfig,
    attempt: u32,
    clock: Arc<dyn Clock>,
    retries: Arc<AtomicU64>,
}

impl RetryPolicy {
    pub fn new(cfg: RetryConfig, clock: Arc<dyn Clock>, retries: Arc<AtomicU64>) -> Self {
        RetryPolicy { cfg, attempt: 0, clock, retries }
    }

    /// The back-off before the next retry of `call` after `err`, or None
    /// when it must not be retried: not idempotent, an error a retry cannot
    /// help, retries used up, or a back-off that would end past the call's
    /// deadline.
    pub fn next_delay(&self, call: &Call, err: &Error, r: f64) -> Option<Duration> {
        if !call.idempotent || !err.is_retryable() || self.attempt >= self.cfg.max_retries {
            return None;
        }
        let delay = backoff(&self.cfg, self.attempt, r);
        (self.clock.now() + delay < call.deadline).then_some(delay)
    }
}

impl<Res> tower::retry::Policy<Call, Res, Error> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Res, Error>) -> Option<Self::Future> {
        let Err(err) = result else { return None };
        let delay = self.next_delay(call, err, rand::thread_rng().r#gen::<f64>())?;
        self.attempt += 1;
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(attempt = self.attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying idempotent call");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        // The one place a call is copied for a second attempt.
        call.idempotent.then(|| call.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::Op;
    use crate::clock::FakeClock;
    use tonic::Code;
    use weft_api::pb;

    fn cfg() -> RetryConfig {
        RetryConfig { max_retries: 5, initial_backoff_ms: 10, multiplier: 2.0, max_backoff_ms: 100, jitter: 0.5 }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let c = cfg();
        let ms = |a, r| backoff(&c, a, r).as_millis();
        assert_eq!([ms(0, 0.0), ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(4, 0.0), ms(30, 0.0)], [10, 20, 40, 80, 100, 100]);
        // Up to half taken off.
        assert_eq!(ms(2, 0.999_999), 20);
        assert_eq!(ms(2, 0.5), 30);
        assert_eq!(backoff(&RetryConfig { jitter: 0.0, ..c.clone() }, 2, 0.9).as_millis(), 40);
    }

    fn call(aql: &str, deadline: std::time::Instant) -> Call {
        Call::new(Op::Execute(pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(aql.into())), timeout_ms: 0, serializable: false }), deadline, 1000)
    }

    fn unavailable() -> Error {
        Error::Status { node: "n".into(), code: Code::Unavailable, message: String::new(), reason: None, leader: None }
    }

    #[test]
    fn retries_stop_at_the_deadline_on_a_fake_clock() {
        let clock = Arc::new(FakeClock::new());
        let p = RetryPolicy::new(cfg(), clock.clone(), Arc::default());
        let c = call("GET t 'k'", clock.now() + Duration::from_millis(50));
        assert_eq!(p.next_delay(&c, &unavailable(), 0.0), Some(Duration::from_millis(10)));
        clock.advance(Duration::from_millis(40));
        // 40 + 10 = 50: would end at the deadline.
        assert_eq!(p.next_delay(&c, &unavailable(), 0.0), None);
        // With jitter taking 5 ms off it still fits.
        assert_eq!(p.next_delay(&c, &unavailable(), 1.0), Some(Duration::from_millis(5)));
    }

    #[test]
    fn only_idempotent_calls_and_retryable_errors() {
        let clock = Arc::new(FakeClock::new());
        let mut p = RetryPolicy::new(cfg(), clock.clone(), Arc::default());
        let far = clock.now() + Duration::from_secs(60);
        assert!(p.next_delay(&call("SET t 'k' = 1", far), &unavailable(), 0.0).is_none());
        let nf = Error::Status { node: "n".into(), code: Code::NotFound, message: String::new(), reason: None, leader: None };
        assert!(p.next_delay(&call("GET t 'k'", far), &nf, 0.0).is_none());
        assert!(p.next_delay(&call("GET t 'k'", far), &Error::BreakerOpen { node: "n".into() }, 0.0).is_some());
        p.attempt = 5;
        assert!(p.next_delay(&call("GET t 'k'", far), &unavailable(), 0.0).is_none());
        let mut p = RetryPolicy::new(cfg(), clock, Arc::default());
        assert!(tower::retry::Policy::<Call, (), Error>::clone_request(&mut p, &call("SET t 'k' = 1", far)).is_none());
        assert!(tower::retry::Policy::<Call, (), Error>::clone_request(&mut p, &call("GET t 'k'", far)).is_some());
    }
}
