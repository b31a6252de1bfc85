//! Per-key rate limits: one token bucket per API key. A bucket holds up to `burst` tokens and
//! refills at `per_second`; each request takes one, and a request that finds the bucket empty
//! is refused with 429 `rate_limit_exceeded` and a `Retry-After` saying when a token will be
//! there. Buckets live in memory, so a restart refills them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

/// How fast a key may call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of every key that has called.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `None` when `per_second` is 0: no limit.
    pub fn new(rate: Rate) -> Option<Self> {
        (rate.per_second > 0.0).then(|| Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token from `key`'s bucket, or says in how many whole seconds one will be there.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst as f64,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst as f64);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate_per_key() {
        let limiter = RateLimiter::new(Rate {
            per_second: 2.0,
            burst: 3,
        })
        .unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take_at("a", t0), Ok(()));
        }
        assert_eq!(limiter.take_at("a", t0), Err(1), "bucket empty");
        // Another key has its own bucket.
        assert_eq!(limiter.take_at("b", t0), Ok(()));
        // Half a second at 2/s is one token, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take_at("a", t1), Ok(()));
        assert!(limiter.take_at("a", t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take_at("a", t2), Ok(()));
        }
        assert!(limiter.take_at("a", t2).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let limiter = RateLimiter::new(Rate {
            per_second: 0.1,
            burst: 1,
        })
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(limiter.take_at("k", t0), Ok(()));
        assert_eq!(limiter.take_at("k", t0), Err(10));
        assert_eq!(
            limiter.take_at("k", t0 + Duration::from_millis(2500)),
            Err(8)
        );
    }

    #[test]
    fn zero_rate_is_no_limiter() {
        assert!(RateLimiter::new(Rate {
            per_second: 0.0,
            burst: 5
        })
        .is_none());
    }
}
