use std::time::Duration;

/// Exponential back-off with full jitter: attempt `n` waits a random time in
/// `[delay/2, delay]` where `delay = min(initial * multiplier^n, max)`. The
/// random source is passed in so the schedule is testable.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial_ms: 50, max_ms: 5_000, multiplier: 2.0 }
    }
}

impl Backoff {
    /// `unit` is a uniform random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.initial_ms as f64 * self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let capped = base.min(self.max_ms as f64).max(0.0);
        let jittered = capped * (0.5 + 0.5 * unit.clamp(0.0, 1.0));
        Duration::from_micros((jittered * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let b = Backoff { initial_ms: 100, max_ms: 1_000, multiplier: 2.0 };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(10, 1.0), Duration::from_millis(1_000));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_millis(500));
    }
}
