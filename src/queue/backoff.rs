//! Retry schedule (pure): exponential with "equal jitter", so that a dead peer is never
//! hammered (no zero delays) while retries of many pushes still spread out.

use std::time::Duration;

/// Delay before attempt `attempt + 1`, after `attempt` failed (`attempt` ≥ 1).
/// `unit` is a uniform random number in `[0, 1)`.
pub fn delay(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let cap = base.saturating_mul(1u32 << exp).min(max);
    let half = cap / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Duration::from_millis(1000);
        let m = Duration::from_secs(60);
        assert_eq!(delay(1, b, m, 0.0), Duration::from_millis(500));
        assert_eq!(delay(1, b, m, 1.0), Duration::from_millis(1000));
        assert_eq!(delay(3, b, m, 0.0), Duration::from_millis(2000));
        assert_eq!(delay(30, b, m, 1.0), m);
        assert_eq!(delay(u32::MAX, b, m, 0.5), Duration::from_secs(45));
    }

    proptest::proptest! {
        #[test]
        fn never_zero_never_above_cap(attempt in 1u32..100, unit in 0.0f64..1.0) {
            let d = delay(attempt, Duration::from_millis(100), Duration::from_secs(10), unit);
            proptest::prop_assert!(d >= Duration::from_millis(50));
            proptest::prop_assert!(d <= Duration::from_secs(10));
        }
    }
}
