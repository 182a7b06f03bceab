//! Pipelined fetching for the watch loop: each batch's fetch runs on a task
//! of its own, a bounded number at a time, and finished batches are handed
//! over in order through a bounded channel. Apart from the loop, because it
//! is about tasks and back-pressure, not about chains or reorgs.

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::mpsc;

use super::ObservedBlock;
use crate::{Error, Result};

/// Batches fetched ahead, in order; dropping it aborts the fetching.
pub(super) struct Prefetched {
    pub(super) receiver: mpsc::Receiver<Result<Vec<ObservedBlock>>>,
    _producer: AbortOnDrop<()>,
}

/// Runs `fetches` on their own tasks, `concurrency` at a time, and hands
/// them over in order. Fetching runs ahead of the consumer by up to
/// `concurrency * fetch_ahead` finished batches, so neither waits on the
/// other while both have work; dropping the [`Prefetched`] stops it all.
/// A failed fetch is handed over and ends the fetching.
pub(super) fn prefetch<F>(fetches: Vec<F>, concurrency: usize, fetch_ahead: usize) -> Prefetched
where
    F: Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let (sender, receiver) = mpsc::channel(concurrency * fetch_ahead.max(1));
    let producer = async move {
        let mut waiting = fetches.into_iter();
        let mut in_flight = FuturesOrdered::new();
        // Each on its own task, so decoding uses every core.
        for fetch in waiting.by_ref().take(concurrency) {
            in_flight.push_back(spawn_aborting(fetch));
        }
        while let Some(batch) = in_flight.next().await {
            if let Some(fetch) = waiting.next() {
                in_flight.push_back(spawn_aborting(fetch));
            }
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                break;
            }
        }
    };
    Prefetched {
        receiver,
        _producer: spawn_aborting(producer),
    }
}

/// Runs `future` on its own task until it finishes or the handle is dropped.
fn spawn_aborting<F>(future: F) -> AbortOnDrop<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(future);
    AbortOnDrop(task.abort_handle(), task)
}

/// A spawned fetch that is aborted if the step stops waiting for it (a
/// reorg, an error, or cancellation).
struct AbortOnDrop<T>(tokio::task::AbortHandle, tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<Result<T>> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.1)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(err) => Err(Error::Corrupt(format!("fetch task: {err}"))),
            })
    }
}
