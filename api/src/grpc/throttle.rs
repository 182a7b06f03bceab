//! Login throttling: failed attempts are counted per (account, client
//! address) and per client address over a sliding window. A stranger's
//! failures fill only their own buckets, so they cannot lock a victim out
//! of logging in from the victim's address. Counts live in this process;
//! behind several replicas each counts its own share.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most; beyond it the oldest window is dropped wholesale.
const MAX_KEYS: usize = 100_000;

/// (account, client address); no account for the per-address bucket.
type BucketKey = (Option<String>, Option<IpAddr>);

#[derive(Debug)]
pub struct LoginThrottle {
    per_account_and_client: u32,
    per_client: u32,
    window: Duration,
    failures: Mutex<HashMap<BucketKey, VecDeque<Instant>>>,
}

impl LoginThrottle {
    pub fn new(per_account_and_client: u32, per_client: u32, window: Duration) -> Self {
        Self {
            per_account_and_client,
            per_client,
            window,
            failures: Mutex::default(),
        }
    }

    fn count(&self, key: &BucketKey, now: Instant) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 0;
        };
        let Some(times) = failures.get_mut(key) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            times.pop_front();
        }
        u32::try_from(times.len()).unwrap_or(u32::MAX)
    }

    /// Whether another attempt for `email` from `client` may proceed.
    pub fn allows(&self, email: &str, client: Option<IpAddr>) -> bool {
        let now = Instant::now();
        self.count(&(Some(email.to_owned()), client), now) < self.per_account_and_client
            && self.count(&(None, client), now) < self.per_client
    }

    pub fn record_failure(&self, email: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_KEYS {
            failures.clear();
        }
        for key in [(Some(email.to_owned()), client), (None, client)] {
            failures.entry(key).or_default().push_back(now);
        }
    }

    pub fn record_success(&self, email: &str, client: Option<IpAddr>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&(Some(email.to_owned()), client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_cannot_lock_out_the_victim() {
        let throttle = LoginThrottle::new(3, 10, Duration::from_secs(60));
        let attacker = Some(IpAddr::from([10, 0, 0, 66]));
        let victim = Some(IpAddr::from([10, 0, 0, 7]));
        for _ in 0..3 {
            assert!(throttle.allows("victim@example.com", attacker));
            throttle.record_failure("victim@example.com", attacker);
        }
        assert!(
            !throttle.allows("victim@example.com", attacker),
            "the attacker is throttled"
        );
        assert!(
            throttle.allows("victim@example.com", victim),
            "the victim is not"
        );
        assert!(
            throttle.allows("other@example.com", attacker),
            "other accounts from that address still count"
        );
        for i in 0..7 {
            throttle.record_failure(&format!("user{i}@example.com"), attacker);
        }
        assert!(
            !throttle.allows("fresh@example.com", attacker),
            "per-address cap over all accounts"
        );
        throttle.record_failure("victim@example.com", victim);
        throttle.record_success("victim@example.com", victim);
        assert!(throttle.allows("victim@example.com", victim));
    }

    #[test]
    fn failures_expire_with_the_window() {
        let throttle = LoginThrottle::new(1, 10, Duration::from_millis(20));
        throttle.record_failure("a@example.com", None);
        assert!(!throttle.allows("a@example.com", None));
        std::thread::sleep(Duration::from_millis(30));
        assert!(throttle.allows("a@example.com", None));
    }
}
