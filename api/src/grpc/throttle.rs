//! Throttling of password checks (`Login`, `ChangePassword`) and of
//! `Register`, in process memory: each replica counts its own share.
//!
//! - An attempt is reserved before the password is checked and counts
//!   against every limit until its outcome is known, so a burst of
//!   concurrent guesses gets no more than the limit.
//! - Failures count per (account, client), per client over all accounts,
//!   and per account over all clients. Past the per-account limit each
//!   further attempt waits a doubling backoff after the last failure,
//!   capped, instead of a lock-out; a client that logged into the account
//!   recently skips that backoff, so a stranger cannot keep the owner out.
//! - `Register` counts registrations per client, and a taken email as a
//!   failure of that client (it tells whether an account exists).
//! - A client is an IPv4 address or an IPv6 /64 (what one subscriber
//!   gets), read from a trusted proxy's header only (`ClientAddresses`).
//! - At most `max_keys` buckets are kept; the least recently used goes first.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// How long a successful login exempts its (account, client) from the
/// account's backoff.
const TRUSTED_CLIENT_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Failures past the per-account limit that still lengthen the backoff.
const BACKOFF_STEPS: usize = 32;

#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    pub per_account_and_client: u32,
    pub per_client: u32,
    pub per_account: u32,
    pub window: Duration,
    pub backoff_max: Duration,
    pub registrations_per_client: u32,
    pub max_keys: usize,
}

/// Who an attempt comes from, as far as throttling is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// No peer address (not a TCP connection).
    Unknown,
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Client {
    pub fn from_ip(ip: Option<IpAddr>) -> Self {
        match ip.map(canonical) {
            None => Client::Unknown,
            Some(IpAddr::V4(v4)) => Client::V4(v4),
            Some(IpAddr::V6(v6)) => Client::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack sockets)
/// are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    AccountClient(String, Client),
    Client(Client),
    Account(String),
    Registrations(Client),
}

#[derive(Debug, Default)]
struct Bucket {
    /// Counted events in the window, oldest first; only the newest few that
    /// can still decide anything are kept.
    events: VecDeque<Instant>,
    /// Reserved attempts whose outcome is not known yet.
    pending: u32,
    /// Until when this (account, client) skips the account's backoff.
    trusted_until: Option<Instant>,
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
    fn check_window(&mut self, limit: u32, window: Duration, now: Instant) -> Result<(), Duration> {
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
    fn check_backoff(
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

    fn record(&mut self, now: Instant, keep: usize) {
        self.events.push_back(now);
        while self.events.len() > keep.max(1) {
            self.events.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<Key, Bucket>,
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
    fn used(&mut self, key: &Key) -> Option<&mut Bucket> {
        if !self.buckets.contains_key(key) {
            return None;
        }
        let stamp = self.stamp(key);
        let bucket = self.buckets.get_mut(key)?;
        bucket.stamp = stamp;
        Some(bucket)
    }

    /// The bucket for `key`, created if missing (evicting the least
    /// recently used beyond `max_keys`), marked as just used.
    fn touch(&mut self, key: &Key, max_keys: usize) -> &mut Bucket {
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

/// A refusal: how long until an attempt may succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds, at least one.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere
        // while holding the lock does not invalidate it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limit_of(&self, key: &Key) -> usize {
        let c = &self.config;
        match key {
            Key::AccountClient(..) => c.per_account_and_client as usize,
            Key::Client(_) => c.per_client as usize,
            Key::Account(_) => c.per_account as usize + BACKOFF_STEPS,
            Key::Registrations(_) => c.registrations_per_client as usize,
        }
    }

    /// Reserves a password check of `account` (a normalized email) by
    /// `client`, or says how long to wait.
    pub fn begin_password_check(
        self: &Arc<Self>,
        account: &str,
        client: Client,
    ) -> Result<Attempt, Throttled> {
        let c = &self.config;
        let now = Instant::now();
        let pair = Key::AccountClient(account.to_owned(), client);
        let per_client = Key::Client(client);
        let per_account = Key::Account(account.to_owned());
        let mut state = self.state();
        let mut wait = Duration::ZERO;
        let mut trusted = false;
        if let Some(bucket) = state.used(&pair) {
            trusted = bucket.trusted_until.is_some_and(|t| t > now);
            if let Err(w) = bucket.check_window(c.per_account_and_client, c.window, now) {
                wait = wait.max(w);
            }
        }
        if let Some(bucket) = state.used(&per_client)
            && let Err(w) = bucket.check_window(c.per_client, c.window, now)
        {
            wait = wait.max(w);
        }
        if !trusted
            && let Some(bucket) = state.used(&per_account)
            && let Err(w) = bucket.check_backoff(c.per_account, c.window, c.backoff_max, now)
        {
            wait = wait.max(w);
        }
        self.reserve(&mut state, wait, vec![pair, per_client, per_account])
    }

    /// Reserves a registration by `client`, or says how long to wait.
    pub fn begin_registration(self: &Arc<Self>, client: Client) -> Result<Attempt, Throttled> {
        let c = &self.config;
        let now = Instant::now();
        let registrations = Key::Registrations(client);
        let per_client = Key::Client(client);
        let mut state = self.state();
        let mut wait = Duration::ZERO;
        if let Some(bucket) = state.used(&registrations)
            && let Err(w) = bucket.check_window(c.registrations_per_client, c.window, now)
        {
            wait = wait.max(w);
        }
        if let Some(bucket) = state.used(&per_client)
            && let Err(w) = bucket.check_window(c.per_client, c.window, now)
        {
            wait = wait.max(w);
        }
        self.reserve(&mut state, wait, vec![registrations, per_client])
    }

    /// Refuses if any limit asked to `wait`, else counts the attempt as
    /// pending in every bucket it is charged to, under the same lock as the
    /// checks, so concurrent attempts cannot all pass them.
    fn reserve(
        self: &Arc<Self>,
        state: &mut State,
        wait: Duration,
        keys: Vec<Key>,
    ) -> Result<Attempt, Throttled> {
        if !wait.is_zero() {
            return Err(Throttled { retry_after: wait });
        }
        for key in &keys {
            state.touch(key, self.config.max_keys).pending += 1;
        }
        Ok(Attempt {
            throttle: Arc::clone(self),
            keys,
            settled: false,
        })
    }

    fn settle(&self, attempt: &Attempt, outcome: Outcome) {
        let now = Instant::now();
        let mut state = self.state();
        for key in &attempt.keys {
            let record = match outcome {
                Outcome::Failed => true,
                // Registrations count whatever their outcome.
                Outcome::Succeeded => matches!(key, Key::Registrations(_)),
                Outcome::Abandoned => false,
            };
            // A login resets its (account, client) and trusts it for a while.
            let trust = outcome == Outcome::Succeeded && matches!(key, Key::AccountClient(..));
            if record || trust {
                let bucket = state.touch(key, self.config.max_keys);
                bucket.pending = bucket.pending.saturating_sub(1);
                if record {
                    bucket.record(now, self.limit_of(key));
                }
                if trust {
                    bucket.events.clear();
                    bucket.trusted_until = Some(now + TRUSTED_CLIENT_TTL);
                }
            } else if let Some(bucket) = state.buckets.get_mut(key) {
                // Only a release: an evicted bucket is not revived for it.
                bucket.pending = bucket.pending.saturating_sub(1);
            }
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.state().buckets.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    /// No answer reached the client (cancelled, or failed before the check).
    Abandoned,
}

/// A reserved attempt. Dropped without an outcome, it is released: the
/// caller learned nothing from it.
#[derive(Debug)]
pub struct Attempt {
    throttle: Arc<Throttle>,
    keys: Vec<Key>,
    settled: bool,
}

impl Attempt {
    /// The password was right (or the registration went through).
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle.settle(&self, Outcome::Succeeded);
    }

    /// The password was wrong (or the email was taken).
    pub fn failed(mut self) {
        self.settled = true;
        self.throttle.settle(&self, Outcome::Failed);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.settle(self, Outcome::Abandoned);
        }
    }
}

/// A proxy address or network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let base = canonical(base);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { base, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Where a request's client address comes from: the TCP peer, unless the
/// peer is a trusted proxy, in which case the configured header (in
/// `X-Forwarded-For` form) names it. The header is read from the right,
/// past every trusted proxy, to the first address that is not one: entries
/// to the left of that were written by the client and prove nothing.
#[derive(Clone, Debug, Default)]
pub struct ClientAddresses {
    proxies: Vec<Network>,
    header: String,
}

impl ClientAddresses {
    /// `Err((index, reason))` names the entry of `proxies` that is invalid.
    pub fn new(proxies: &[String], header: &str) -> Result<Self, (usize, String)> {
        let proxies = proxies
            .iter()
            .enumerate()
            .map(|(index, text)| Network::parse(text).map_err(|why| (index, why)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            proxies,
            header: header.trim().to_ascii_lowercase(),
        })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(ip))
    }

    pub fn resolve(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let mut client = canonical(peer?.ip());
        if !self.trusted(client) || self.header.is_empty() {
            return Some(client);
        }
        for value in metadata.get_all(self.header.as_str()).iter().rev() {
            let Ok(text) = value.to_str() else {
                return Some(client);
            };
            for hop in text.rsplit(',') {
                let Some(ip) = parse_hop(hop) else {
                    // Malformed: stop at the last proxy we believe.
                    return Some(client);
                };
                client = canonical(ip);
                if !self.trusted(client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            per_account_and_client: 3,
            per_client: 10,
            per_account: 6,
            window: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            registrations_per_client: 4,
            max_keys: 1_000,
        }
    }

    fn v4(last: u8) -> Client {
        Client::from_ip(Some(IpAddr::from([10, 0, 0, last])))
    }

    fn fail(throttle: &Arc<Throttle>, account: &str, client: Client) {
        throttle
            .begin_password_check(account, client)
            .expect("allowed")
            .failed();
    }

    #[test]
    fn reservations_count_before_the_outcome_is_known() {
        let throttle = Throttle::new(config());
        let held: Vec<Attempt> = (0..3)
            .map(|_| {
                throttle
                    .begin_password_check("a@example.com", v4(1))
                    .expect("allowed")
            })
            .collect();
        assert!(
            throttle
                .begin_password_check("a@example.com", v4(1))
                .is_err(),
            "three in flight use up the limit of three"
        );
        drop(held);
        assert!(
            throttle
                .begin_password_check("a@example.com", v4(1))
                .is_ok(),
            "abandoned attempts are released"
        );
    }

    #[test]
    fn strangers_cannot_lock_out_the_victim() {
        let throttle = Throttle::new(config());
        let (attacker, victim) = (v4(66), v4(7));
        throttle
            .begin_password_check("victim@example.com", victim)
            .expect("allowed")
            .succeeded();
        for _ in 0..3 {
            fail(&throttle, "victim@example.com", attacker);
        }
        let refused = throttle
            .begin_password_check("victim@example.com", attacker)
            .expect_err("the attacker is throttled");
        assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
        assert!(
            throttle
                .begin_password_check("victim@example.com", victim)
                .is_ok(),
            "the victim is not"
        );
        // From many addresses the attacker exhausts the per-account limit:
        // new addresses then back off, the victim's known address does not.
        for last in 100..103 {
            fail(&throttle, "victim@example.com", v4(last));
        }
        let backoff = throttle
            .begin_password_check("victim@example.com", v4(200))
            .expect_err("per-account backoff");
        assert!(
            backoff.retry_after <= Duration::from_secs(2),
            "a backoff, not a lock-out: {backoff:?}"
        );
        assert!(
            throttle
                .begin_password_check("victim@example.com", victim)
                .is_ok(),
            "a client that logged in before skips the backoff"
        );
        for i in 0..7 {
            fail(&throttle, &format!("user{i}@example.com"), attacker);
        }
        assert!(
            throttle
                .begin_password_check("fresh@example.com", attacker)
                .is_err(),
            "per-client cap over all accounts"
        );
    }

    #[test]
    fn the_account_backoff_doubles_up_to_its_cap() {
        let throttle = Throttle::new(ThrottleConfig {
            per_account: 2,
            backoff_max: Duration::from_secs(5),
            ..config()
        });
        let now = Instant::now();
        let key = Key::Account("a@example.com".into());
        let mut waits = Vec::new();
        let mut state = throttle.state();
        for _ in 0..6 {
            let bucket = state.touch(&key, 100);
            // One more failure, just now.
            bucket.record(now, 100);
            waits.push(
                bucket
                    .check_backoff(2, Duration::from_secs(60), Duration::from_secs(5), now)
                    .err()
                    .map(|w| w.as_secs()),
            );
        }
        assert_eq!(
            waits,
            vec![None, Some(1), Some(2), Some(4), Some(5), Some(5)]
        );
    }

    #[test]
    fn failures_expire_with_the_window() {
        let throttle = Throttle::new(ThrottleConfig {
            per_account_and_client: 1,
            window: Duration::from_millis(30),
            ..config()
        });
        fail(&throttle, "a@example.com", Client::Unknown);
        assert!(
            throttle
                .begin_password_check("a@example.com", Client::Unknown)
                .is_err()
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            throttle
                .begin_password_check("a@example.com", Client::Unknown)
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64() {
        let ip = |text: &str| Client::from_ip(Some(text.parse().expect("ip")));
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), v4(1), "IPv4-mapped is IPv4");
        let throttle = Throttle::new(config());
        for n in 0..3 {
            fail(&throttle, "a@example.com", ip(&format!("2001:db8::{n}")));
        }
        assert!(
            throttle
                .begin_password_check("a@example.com", ip("2001:db8::abcd"))
                .is_err(),
            "a new address in the same /64 is the same client"
        );
        assert!(
            throttle
                .begin_password_check("a@example.com", ip("2001:db8:0:1::1"))
                .is_ok()
        );
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_bucket() {
        let throttle = Throttle::new(ThrottleConfig {
            per_account_and_client: 1,
            max_keys: 9,
            ..config()
        });
        // Each failure fills three buckets: pair, client, account.
        fail(&throttle, "old@example.com", v4(1));
        fail(&throttle, "mid@example.com", v4(2));
        fail(&throttle, "new@example.com", v4(3));
        assert_eq!(throttle.keys(), 9);
        // A refused attempt still marks old@'s buckets as used, so the
        // fourth account evicts mid@'s, the least recently used.
        assert!(
            throttle
                .begin_password_check("old@example.com", v4(1))
                .is_err()
        );
        fail(&throttle, "fourth@example.com", v4(4));
        assert_eq!(throttle.keys(), 9, "bounded, never cleared");
        for (account, client) in [
            ("old@example.com", v4(1)),
            ("new@example.com", v4(3)),
            ("fourth@example.com", v4(4)),
        ] {
            assert!(
                throttle.begin_password_check(account, client).is_err(),
                "{account} is still throttled"
            );
        }
        assert!(
            throttle
                .begin_password_check("mid@example.com", v4(2))
                .is_ok(),
            "mid@ was evicted"
        );
    }

    #[test]
    fn registrations_count_per_client_and_taken_emails_count_as_failures() {
        let throttle = Throttle::new(ThrottleConfig {
            registrations_per_client: 3,
            per_client: 2,
            ..config()
        });
        throttle
            .begin_registration(v4(1))
            .expect("allowed")
            .succeeded();
        throttle
            .begin_registration(v4(1))
            .expect("allowed")
            .failed();
        throttle
            .begin_registration(v4(1))
            .expect("allowed")
            .failed();
        assert!(
            throttle.begin_registration(v4(1)).is_err(),
            "two taken emails use up the client's failures"
        );
        throttle
            .begin_registration(v4(2))
            .expect("allowed")
            .succeeded();
        throttle
            .begin_registration(v4(2))
            .expect("allowed")
            .succeeded();
        throttle
            .begin_registration(v4(2))
            .expect("allowed")
            .succeeded();
        assert!(
            throttle.begin_registration(v4(2)).is_err(),
            "three registrations per window"
        );
    }

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let proxies = ClientAddresses::new(
            &["10.0.0.0/8".into(), "2001:db8:ffff::/48".into()],
            "X-Forwarded-For",
        )
        .expect("valid");
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().expect("ip"), 4000));
        let header = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("x-forwarded-for", value.parse().expect("ascii"));
            metadata
        };
        let ip = |text: &str| Some(text.parse::<IpAddr>().expect("ip"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.resolve(peer("198.51.100.7"), &header("203.0.113.1")),
            ip("198.51.100.7")
        );
        // A trusted peer: the rightmost untrusted hop, past other proxies;
        // what the client itself wrote further left is ignored.
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &header("6.6.6.6, 203.0.113.9, 10.9.9.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.resolve(peer("::ffff:10.1.2.3"), &header("[2001:db8::5]:443")),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &MetadataMap::new()),
            ip("10.1.2.3"),
            "no header: the proxy itself"
        );
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &header("203.0.113.9, garbage")),
            ip("10.1.2.3"),
            "a malformed hop stops the walk at the last trusted address"
        );
        assert_eq!(proxies.resolve(None, &MetadataMap::new()), None);

        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            let err = ClientAddresses::new(&["127.0.0.1".into(), bad.into()], "x-forwarded-for");
            assert_eq!(err.err().map(|(index, _)| index), Some(1), "{bad}");
        }
        let net = Network::parse("0.0.0.0/0").expect("all of IPv4");
        assert!(net.contains(IpAddr::from([192, 0, 2, 1])));
        assert!(!net.contains("2001:db8::1".parse().expect("ip")));
    }
}
