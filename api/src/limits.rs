//! The gRPC server's limits on each call: at most `concurrency` calls run at
//! once over all connections and at most `queue` more wait for a turn; each
//! call waits and runs within one deadline, the server's `request_timeout`
//! or the client's shorter `grpc-timeout`. A call finding the queue full, or
//! still waiting at its deadline, answers RESOURCE_EXHAUSTED (the server is
//! busy; retry with backoff); one running past its deadline answers
//! DEADLINE_EXCEEDED. The queue lets a client's burst of short calls
//! through; its bound and the deadline keep a flood from piling up.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};

#[derive(Clone, Debug)]
pub struct CallLimitLayer {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    concurrency: usize,
    queue: usize,
    timeout: Duration,
}

impl CallLimitLayer {
    pub fn new(concurrency: usize, queue: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::default(),
            concurrency,
            queue,
            timeout,
        }
    }

    fn busy(&self) -> Response<Body> {
        Status::resource_exhausted(format!(
            "server busy: {} calls in flight; retry with backoff",
            self.concurrency
        ))
        .into_http()
    }
}

/// Counts a call as waiting until dropped (served, refused or cancelled).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallLimit<S> {
    inner: S,
    limits: CallLimitLayer,
}

impl<S> Service<Request<Body>> for CallLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        let timeout = client_timeout(&request).map_or(limits.timeout, |t| t.min(limits.timeout));
        let deadline = Instant::now() + timeout;
        Box::pin(async move {
            let permit = match Arc::clone(&limits.permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let waiting = Waiting(Arc::clone(&limits.waiting));
                    if waiting.0.fetch_add(1, Ordering::AcqRel) >= limits.queue {
                        return Ok(limits.busy());
                    }
                    let acquire = Arc::clone(&limits.permits).acquire_owned();
                    match tokio::time::timeout_at(deadline, acquire).await {
                        Ok(Ok(permit)) => permit,
                        // Waited out the deadline (or the semaphore closed).
                        _ => return Ok(limits.busy()),
                    }
                }
            };
            let answer = tokio::time::timeout_at(deadline, inner.call(request)).await;
            drop(permit);
            match answer {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call did not finish within its deadline of {} ms",
                    timeout.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

/// The client's `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u,
/// n). A malformed value is ignored, leaving the server's timeout.
fn client_timeout<B>(request: &Request<B>) -> Option<Duration> {
    let value = request.headers().get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3_600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::sync::Notify;

    /// Answers OK once `release` is notified.
    #[derive(Clone)]
    struct Held(Arc<Notify>);

    impl Service<Request<Body>> for Held {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let release = Arc::clone(&self.0);
            Box::pin(async move {
                release.notified().await;
                Ok(Response::new(Body::default()))
            })
        }
    }

    fn code(response: &Response<Body>) -> Option<tonic::Code> {
        let status = response.headers().get("grpc-status")?.to_str().ok()?;
        Some(tonic::Code::from_i32(status.parse().ok()?))
    }

    #[tokio::test]
    async fn calls_past_the_limit_wait_in_a_bounded_queue_within_their_deadline() {
        let release = Arc::new(Notify::new());
        let layer = CallLimitLayer::new(1, 1, Duration::from_millis(500));
        let mut service = layer.layer(Held(Arc::clone(&release)));
        let call = |service: &mut CallLimit<Held>| {
            tokio::spawn(service.call(Request::new(Body::default())))
        };
        let running = call(&mut service);
        tokio::task::yield_now().await;
        let queued = call(&mut service);
        tokio::task::yield_now().await;
        // No room left to wait: refused at once.
        let refused = call(&mut service).await.expect("task").expect("infallible");
        assert_eq!(code(&refused), Some(tonic::Code::ResourceExhausted));
        // The running call finishes, so the queued one gets its turn.
        release.notify_one();
        let served = running.await.expect("task").expect("infallible");
        assert_eq!(code(&served), None, "answered by the service");
        // Never released, it runs out of its deadline.
        let late = queued.await.expect("task").expect("infallible");
        assert_eq!(code(&late), Some(tonic::Code::DeadlineExceeded));
    }

    fn timeout_of(value: &str) -> Option<Duration> {
        let request = Request::builder()
            .header("grpc-timeout", value)
            .body(())
            .ok()?;
        client_timeout(&request)
    }

    #[test]
    fn grpc_timeout_headers_parse_or_are_ignored() {
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(
            timeout_of("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789S", "12x", "-1S", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }
}
