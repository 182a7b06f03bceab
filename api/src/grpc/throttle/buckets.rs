//! The table behind [`Throttle`](super::Throttle): one bucket of recent
//! events per key, sliding-window and backoff checks on a bucket, and
//! least-recently-used eviction past `max_keys`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Client;

/// Failures past the per-account limit that still lengthen the backoff.
pub(super) const BACKOFF_STEPS: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    AccountClient(String, Client),
    Client(Client),
    Account(String),
    Registrations(Client),
}

#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// Counted events in the window, oldest first; only the newest few that
    /// can still decide anything are kept.
    pub(super) events: VecDeque<Instant>,
    /// Reserved attempts whose outcome is not known yet.
    pub(super) pending: u32,
    /// Until when this (account, client) skips the account's backoff.
    pub(super) trusted_until: Option<Instant>,
    /// Position in the eviction queue.
    stamp: u64,
}

impl Bucket {
    fn prune(&mut self, window: Duration, now: Instant) {
        while self
            .events
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.events.pop_front();
        }
    }

    fn count(&self) -> usize {
        self.events.len() + self.pending as usize
    }

    /// A sliding-window limit: `Err(wait)` when `limit` attempts in the
    /// window are already used or reserved.
    pub(super) fn check_window(
        &mut self,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        self.prune(window, now);
        let limit = limit as usize;
        if self.count() < limit {
            return Ok(());
        }
        // The event whose expiry brings the count below the limit.
        let freeing = self.count() - limit;
        Err(self
            .events
            .get(freeing)
            .map_or(Duration::from_secs(1), |t| {
                (*t + window).duration_since(now)
            }))
    }

    /// Up to `limit` failures in the window pass freely; after that one
    /// attempt at a time, each waiting 1, 2, 4 … s (at most `max`) after
    /// the last failure.
    pub(super) fn check_backoff(
        &mut self,
        limit: u32,
        window: Duration,
        max: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        self.prune(window, now);
        let excess = match self.count().checked_sub(limit as usize) {
            None => return Ok(()),
            Some(excess) => excess,
        };
        if self.pending > 0 {
            return Err(Duration::from_secs(1).min(max));
        }
        let exponent = u32::try_from(excess.min(BACKOFF_STEPS)).unwrap_or(32);
        let delay = Duration::from_secs(1u64 << exponent.min(62)).min(max);
        match self.events.back() {
            Some(last) if now < *last + delay => Err((*last + delay).duration_since(now)),
            _ => Ok(()),
        }
    }

    pub(super) fn record(&mut self, now: Instant, keep: usize) {
        self.events.push_back(now);
        while self.events.len() > keep.max(1) {
            self.events.pop_front();
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) buckets: HashMap<Key, Bucket>,
    /// (key, stamp) in the order buckets were last used; an entry whose
    /// stamp differs from its bucket's is stale and skipped.
    order: VecDeque<(Key, u64)>,
    next_stamp: u64,
}

impl State {
    fn stamp(&mut self, key: &Key) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.push_back((key.clone(), stamp));
        if self.order.len() > 4 * self.buckets.len() + 64 {
            let buckets = &self.buckets;
            self.order
                .retain(|(k, s)| buckets.get(k).is_some_and(|b| b.stamp == *s));
        }
        stamp
    }

    /// The bucket for `key` if there is one, marked as just used: a bucket
    /// that keeps refusing an attacker is not the one evicted.
    pub(super) fn used(&mut self, key: &Key) -> Option<&mut Bucket> {
        if !self.buckets.contains_key(key) {
            return None;
        }
        let stamp = self.stamp(key);
        let bucket = self.buckets.get_mut(key)?;
        bucket.stamp = stamp;
        Some(bucket)
    }

    /// How long the sliding window of `key` asks to wait: zero where it
    /// has no bucket or allows the attempt. The bucket counts as used.
    pub(super) fn window_wait(
        &mut self,
        key: &Key,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Duration {
        self.used(key)
            .and_then(|bucket| bucket.check_window(limit, window, now).err())
            .unwrap_or_default()
    }

    /// The bucket for `key`, created if missing (evicting the least
    /// recently used beyond `max_keys`), marked as just used.
    pub(super) fn touch(&mut self, key: &Key, max_keys: usize) -> &mut Bucket {
        if !self.buckets.contains_key(key) {
            while self.buckets.len() >= max_keys.max(1) {
                let Some((old, stamp)) = self.order.pop_front() else {
                    break;
                };
                if self.buckets.get(&old).is_some_and(|b| b.stamp == stamp) {
                    self.buckets.remove(&old);
                }
            }
        }
        let stamp = self.stamp(key);
        let bucket = self.buckets.entry(key.clone()).or_default();
        bucket.stamp = stamp;
        bucket
    }
}
