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
//!
//! Here: the limits and an attempt's life from reservation to outcome;
//! `buckets`: the table they are counted in; `client`: who a request
//! comes from.

mod buckets;
mod client;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use buckets::{BACKOFF_STEPS, Key, State};
pub use client::{Client, ClientAddresses, Network};

/// How long a successful login exempts its (account, client) from the
/// account's backoff.
const TRUSTED_CLIENT_TTL: Duration = Duration::from_secs(30 * 86_400);

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
        wait = wait.max(state.window_wait(&per_client, c.per_client, c.window, now));
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
        let wait = state
            .window_wait(&registrations, c.registrations_per_client, c.window, now)
            .max(state.window_wait(&per_client, c.per_client, c.window, now));
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
