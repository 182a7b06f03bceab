//! Bounded password hashing. Each argon2id hash or verification with
//! Coffer's parameters takes 19 MiB and a core for tens of milliseconds;
//! unbounded, a flood of `Register` or `Login` calls would run hundreds at
//! once on the blocking pool and exhaust memory. At most `concurrency` run
//! at a time, each in one of at most `concurrency` reused 19 MiB buffers;
//! at most `QUEUE_PER_WORKER` times that many wait, and the rest are
//! refused at once.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::password::{Scratch, hash_password_in, verify_password_in};

/// Waiting checks allowed per running one: enough to ride out a burst of
/// logins, few enough that a flood is refused instead of queued for minutes.
pub const QUEUE_PER_WORKER: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("too many password checks in flight")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct PasswordHashing {
    /// Admission: running plus waiting.
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    /// Idle argon2 memory; never more buffers than `running` has permits.
    scratch: Arc<Mutex<Vec<Scratch>>>,
}

impl PasswordHashing {
    /// `concurrency` 0 means one per CPU.
    pub fn new(concurrency: usize) -> Self {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            admitted: Arc::new(Semaphore::new(concurrency * (1 + QUEUE_PER_WORKER))),
            running: Arc::new(Semaphore::new(concurrency)),
            scratch: Arc::default(),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| HashingError::Busy)?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| HashingError::Busy)?;
        // The permits move into the blocking task: if the request is
        // cancelled, the work still runs to the end and holds its slot
        // until then, so cancelled calls cannot start more work than allowed.
        let pool = Arc::clone(&self.scratch);
        tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let idle = pool.lock().ok().and_then(|mut idle| idle.pop());
            let mut scratch = idle.unwrap_or_default();
            let out = work(&mut scratch);
            if let Ok(mut idle) = pool.lock() {
                idle.push(scratch);
            }
            out
        })
        .await
        .map_err(|err| HashingError::Failed(err.to_string()))
    }

    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        self.run(move |scratch| hash_password_in(&password, scratch))
            .await?
            .map_err(|err| HashingError::Failed(err.to_string()))
    }

    /// See `verify_password`: `None` checks against a dummy hash.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashingError> {
        self.run(move |scratch| verify_password_in(&password, stored.as_deref(), scratch))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_concurrency_run_and_the_queue_is_bounded() {
        let pool = PasswordHashing::new(2);
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Work blocks until the gate opens, so the queue fills deterministically.
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let closed = gate.write().await;
        let admitted = 2 * (1 + QUEUE_PER_WORKER);
        let mut tasks = Vec::new();
        for _ in 0..admitted {
            let (pool, now, peak, gate) = (
                pool.clone(),
                Arc::clone(&now),
                Arc::clone(&peak),
                Arc::clone(&gate),
            );
            tasks.push(tokio::spawn(async move {
                pool.run(move |_| {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(running, Ordering::SeqCst);
                    drop(gate.blocking_read());
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        while pool.admitted.available_permits() > 0 || now.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            matches!(pool.run(|_| ()).await, Err(HashingError::Busy)),
            "beyond the queue, calls are refused at once"
        );
        drop(closed);
        for task in tasks {
            task.await.expect("task").expect("admitted work runs");
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "never more than two at once"
        );
        assert!(pool.run(|_| ()).await.is_ok(), "slots come back");
    }
}
