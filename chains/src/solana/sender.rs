//! The transport under [`RpcClient`](solana_rpc_client::nonblocking::rpc_client::RpcClient):
//! `solana-rpc-client`'s `HttpSender` (3.1), except that a reply that is
//! JSON but not an object is an error. `HttpSender` takes the answer with
//! `json["result"].take()`, and indexing a JSON array, number, string or
//! boolean by key panics: a node or proxy answering `[]` with HTTP 200
//! would panic the watcher task. The property tests found it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use solana_rpc_client::rpc_sender::{RpcSender, RpcTransportStats};
use solana_rpc_client_api::client_error::Result as ClientResult;
use solana_rpc_client_api::custom_error::{
    JSON_RPC_SERVER_ERROR_NODE_UNHEALTHY, JSON_RPC_SERVER_ERROR_SEND_TRANSACTION_PREFLIGHT_FAILURE,
    NodeUnhealthyErrorData,
};
use solana_rpc_client_api::error_object::RpcErrorObject;
use solana_rpc_client_api::request::{RpcError, RpcRequest, RpcResponseErrorData};
use solana_rpc_client_api::response::RpcSimulateTransactionResult;

/// JSON-RPC over HTTP, as `HttpSender` speaks it: HTTP 429 is retried up
/// to five times (waiting `Retry-After` seconds under two minutes, else
/// half a second), other failing statuses are errors, and a JSON-RPC
/// `error` object becomes `RpcError::RpcResponseError`.
pub(super) struct JsonRpcSender {
    client: reqwest::Client,
    url: String,
    request_id: AtomicU64,
    stats: Mutex<RpcTransportStats>,
}

impl JsonRpcSender {
    /// Speaks to `url` over `client`, whose timeout bounds each call.
    pub(super) fn new(client: reqwest::Client, url: &str) -> Self {
        Self {
            client,
            url: url.to_owned(),
            request_id: AtomicU64::new(0),
            stats: Mutex::default(),
        }
    }

    async fn call(&self, request: RpcRequest, params: Value) -> ClientResult<Value> {
        let started = Instant::now();
        let mut rate_limited = Duration::ZERO;
        let id = self.request_id.fetch_add(1, Ordering::Relaxed);
        let body = request.build_request_json(id, params).to_string();
        let mut retries = 5;
        let result = loop {
            let response = match self
                .client
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
            {
                Ok(response) => response,
                Err(err) => break Err(err.into()),
            };
            if response.status() == StatusCode::TOO_MANY_REQUESTS && retries > 0 {
                let wait = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .filter(|secs| *secs < 120)
                    .map_or(Duration::from_millis(500), Duration::from_secs);
                retries -= 1;
                tokio::time::sleep(wait).await;
                rate_limited += wait;
                continue;
            }
            let response = match response.error_for_status() {
                Ok(response) => response,
                Err(err) => break Err(err.into()),
            };
            break match response.bytes().await {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(Into::into)
                    .and_then(answer),
                Err(err) => Err(err.into()),
            };
        };
        if let Ok(mut stats) = self.stats.lock() {
            stats.request_count += 1;
            stats.elapsed_time += started.elapsed();
            stats.rate_limited_time += rate_limited;
        }
        result
    }
}

/// The `result` of a JSON-RPC reply, or its `error`, read as `HttpSender`
/// reads them; a reply that is neither an object nor `null` is an error
/// rather than a panic.
fn answer(reply: Value) -> ClientResult<Value> {
    let mut reply = match reply {
        Value::Object(fields) => fields,
        Value::Null => return Ok(Value::Null),
        other => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            };
            return Err(RpcError::ParseError(format!(
                "the reply is {kind}, not a JSON-RPC object"
            ))
            .into());
        }
    };
    let Some(error) = reply.remove("error").filter(Value::is_object) else {
        return Ok(reply.remove("result").unwrap_or_default());
    };
    let object = match serde_json::from_value::<RpcErrorObject>(error.clone()) {
        Ok(object) => object,
        Err(err) => {
            return Err(RpcError::RpcRequestError(format!(
                "Failed to deserialize RPC error response: {error} [{err}]"
            ))
            .into());
        }
    };
    let data = error.get("data").cloned().unwrap_or_default();
    let data = match object.code {
        JSON_RPC_SERVER_ERROR_SEND_TRANSACTION_PREFLIGHT_FAILURE => {
            serde_json::from_value::<RpcSimulateTransactionResult>(data)
                .map_or(RpcResponseErrorData::Empty, |result| {
                    RpcResponseErrorData::SendTransactionPreflightFailure(result)
                })
        }
        JSON_RPC_SERVER_ERROR_NODE_UNHEALTHY => {
            serde_json::from_value::<NodeUnhealthyErrorData>(data).map_or(
                RpcResponseErrorData::Empty,
                |data| RpcResponseErrorData::NodeUnhealthy {
                    num_slots_behind: data.num_slots_behind,
                },
            )
        }
        _ => RpcResponseErrorData::Empty,
    };
    Err(RpcError::RpcResponseError {
        code: object.code,
        message: object.message,
        data,
    }
    .into())
}

impl RpcSender for JsonRpcSender {
    // `RpcSender` is an `async_trait`; this is the signature it expands to.
    fn send<'life0, 'async_trait>(
        &'life0 self,
        request: RpcRequest,
        params: Value,
    ) -> Pin<Box<dyn Future<Output = ClientResult<Value>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.call(request, params))
    }

    fn get_transport_stats(&self) -> RpcTransportStats {
        self.stats
            .lock()
            .map(|stats| stats.clone())
            .unwrap_or_default()
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use solana_rpc_client_api::client_error::ErrorKind;

    use super::*;

    #[test]
    fn replies_that_are_not_objects_are_errors_not_panics() {
        for reply in [json!([]), json!([1]), json!(7), json!("x"), json!(true)] {
            let err = answer(reply.clone()).err();
            assert!(
                matches!(
                    err.as_ref().map(|e| e.kind()),
                    Some(ErrorKind::RpcError(RpcError::ParseError(_)))
                ),
                "{reply}: {err:?}"
            );
        }
        assert_eq!(answer(Value::Null).ok(), Some(Value::Null));
        assert_eq!(
            answer(json!({"jsonrpc": "2.0", "result": [1, 2], "id": 0})).ok(),
            Some(json!([1, 2]))
        );
        assert_eq!(
            answer(json!({"error": null, "result": 5})).ok(),
            Some(json!(5))
        );
    }

    #[test]
    fn error_objects_are_read_as_http_sender_reads_them() {
        let err = answer(json!({"error": {"code": -32007, "message": "Slot 5 was skipped"}})).err();
        assert!(
            matches!(
                err.as_ref().map(|e| e.kind()),
                Some(ErrorKind::RpcError(RpcError::RpcResponseError { code: -32007, message, data: RpcResponseErrorData::Empty }))
                    if message == "Slot 5 was skipped"
            ),
            "{err:?}"
        );
        let err = answer(json!({"error": {
            "code": -32005, "message": "Node is behind", "data": {"numSlotsBehind": 42}
        }}))
        .err();
        assert!(
            matches!(
                err.as_ref().map(|e| e.kind()),
                Some(ErrorKind::RpcError(RpcError::RpcResponseError {
                    data: RpcResponseErrorData::NodeUnhealthy {
                        num_slots_behind: Some(42)
                    },
                    ..
                }))
            ),
            "{err:?}"
        );
        let err = answer(json!({"error": {"code": "x"}})).err();
        assert!(
            matches!(
                err.as_ref().map(|e| e.kind()),
                Some(ErrorKind::RpcError(RpcError::RpcRequestError(_)))
            ),
            "{err:?}"
        );
    }
}
