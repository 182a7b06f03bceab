//! Shared pieces of the decoder property tests: a fake node that answers
//! over HTTP with whatever a test hands it, strategies for arbitrary JSON,
//! and edits that damage a real-shaped reply.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use crate::devnet::http::read_request;

/// Cases per property: enough to hit the odd shape, few enough that the
/// suite stays fast.
pub(crate) const CASES: u32 = 256;

/// Runs `test` on [`CASES`] values of `strategy`. A panic in `test` fails
/// the property like an assertion, shrunk to a minimal input.
pub(crate) fn check<S: Strategy>(
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// A runtime for driving a client from a property.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What the fake node sends back: an HTTP status and a body.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            body: body.into(),
        }
    }

    pub(crate) fn json(value: &Value) -> Self {
        Reply::ok(value.to_string())
    }
}

type Answer = Box<dyn FnMut(&Value) -> Reply + Send>;

/// A node on a loopback port that answers every request (its body parsed
/// as JSON, `null` where it is not) with the current [`FakeNode::answer`].
/// Connections are kept alive, as real nodes do.
pub(crate) struct FakeNode {
    url: String,
    answer: Arc<Mutex<Answer>>,
}

impl FakeNode {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let answer: Arc<Mutex<Answer>> =
            Arc::new(Mutex::new(Box::new(|_: &Value| Reply::ok(Vec::new()))));
        let shared = Arc::clone(&answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &answer);
                });
            }
        });
        FakeNode { url, answer }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Answers from now on with `answer`.
    pub(crate) fn answer(&self, answer: impl FnMut(&Value) -> Reply + Send + 'static) {
        *self.answer.lock().expect("answer lock") = Box::new(answer);
    }
}

fn serve(stream: TcpStream, answer: &Mutex<Answer>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    stream.set_nodelay(true)?;
    let mut writer = stream;
    while let Some(body) = read_request(&mut reader)? {
        let request = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = match answer.lock() {
            Ok(mut answer) => answer(&request),
            Err(_) => Reply {
                status: 500,
                body: Vec::new(),
            },
        };
        // One write: small ones wait out Nagle and delayed ACKs, 40 ms each.
        let mut response = format!(
            "HTTP/1.1 {} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.status,
            reply.body.len()
        )
        .into_bytes();
        response.extend_from_slice(&reply.body);
        writer.write_all(&response)?;
    }
    Ok(())
}

/// A client whose calls a decoder property drives.
pub(crate) trait EveryCall {
    /// Every call that decodes a node reply, each reduced to whether it
    /// failed.
    async fn every_call(&self) -> Vec<crate::Result<()>>;
}

/// Checks a property on [`CASES`] values of `strategy` against a client on
/// a fresh [`FakeNode`]: `answer` sets what the node says for one value,
/// then every call's result must pass `each`.
pub(crate) fn check_calls<S: Strategy, C: EveryCall>(
    client: impl FnOnce(&FakeNode) -> C,
    strategy: S,
    answer: impl Fn(&FakeNode, S::Value) -> Result<(), TestCaseError>,
    each: impl Fn(&crate::Result<()>) -> Result<(), TestCaseError>,
) {
    let node = FakeNode::start();
    let client = client(&node);
    let rt = runtime();
    check(strategy, |value| {
        answer(&node, value)?;
        for result in rt.block_on(client.every_call()) {
            each(&result)?;
        }
        Ok(())
    });
}

/// Property: a node answering arbitrary bytes under one of `statuses`
/// fails every call; each result passes `each` first.
pub(crate) fn arbitrary_bytes_fail_every_call<C: EveryCall>(
    client: impl FnOnce(&FakeNode) -> C,
    statuses: &[u16],
    each: impl Fn(&crate::Result<()>) -> Result<(), TestCaseError>,
) {
    check_calls(
        client,
        garbage(statuses),
        |node, reply| {
            node.answer(move |_| reply.clone());
            Ok(())
        },
        |result| {
            each(result)?;
            prop_assert!(result.is_err());
            Ok(())
        },
    );
}

/// Property: with arbitrary JSON (keys mostly `known`) as the whole reply,
/// or through `result_node` as a well-formed reply's result, every call's
/// result passes `each`.
pub(crate) fn arbitrary_json_answers<C: EveryCall, A>(
    client: impl FnOnce(&FakeNode) -> C,
    known: &'static [&'static str],
    result_node: impl Fn(Value) -> A,
    each: impl Fn(&crate::Result<()>) -> Result<(), TestCaseError>,
) where
    A: FnMut(&Value) -> Reply + Send + 'static,
{
    check_calls(
        client,
        arbitrary_json(known),
        |node, (value, as_result)| {
            node.answer_json(value, as_result, &result_node);
            Ok(())
        },
        each,
    );
}

/// Property: with the replies of `recorded_node` damaged by [`edits`]
/// (aimed at `targets`, keys mostly `known`), every call's result passes
/// `each`.
pub(crate) fn edited_replies<C: EveryCall, A>(
    client: impl FnOnce(&FakeNode) -> C,
    targets: &'static [&'static str],
    known: &'static [&'static str],
    recorded_node: impl Fn(Vec<Edit>) -> A,
    each: impl Fn(&crate::Result<()>) -> Result<(), TestCaseError>,
) where
    A: FnMut(&Value) -> Reply + Send + 'static,
{
    check_calls(
        client,
        edits(targets, known),
        |node, edits| {
            node.answer(recorded_node(edits));
            Ok(())
        },
        each,
    );
}

/// A call may fail on a broken reply, but never as a configuration error.
pub(crate) fn not_config(result: &crate::Result<()>) -> Result<(), TestCaseError> {
    if let Err(err) = result {
        prop_assert_ne!(err.kind(), "config");
    }
    Ok(())
}

/// Arbitrary bytes under one of `statuses`: no JSON-RPC reply at all.
pub(crate) fn garbage(statuses: &[u16]) -> impl Strategy<Value = Reply> {
    (bytes(), prop::sample::select(statuses.to_vec()))
        .prop_map(|(body, status)| Reply { status, body })
}

/// Arbitrary JSON with mostly `known` keys, and whether to send it as the
/// `result` of a well-formed reply rather than as the whole reply.
pub(crate) fn arbitrary_json(
    known: &'static [&'static str],
) -> impl Strategy<Value = (Value, bool)> {
    (json(known), any::<bool>())
}

impl FakeNode {
    /// Answers every request with `value`: through `result_node` (as the
    /// `result` of a well-formed reply) when `as_result`, else as it is.
    pub(crate) fn answer_json<A>(
        &self,
        value: Value,
        as_result: bool,
        result_node: impl FnOnce(Value) -> A,
    ) where
        A: FnMut(&Value) -> Reply + Send + 'static,
    {
        if as_result {
            self.answer(result_node(value));
        } else {
            self.answer(move |_| Reply::json(&value));
        }
    }
}

/// Arbitrary bytes, often longer than an error message's excerpt.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        // Mostly text, so JSON-ish and multi-byte characters turn up.
        ".{0,300}".prop_map(String::into_bytes),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..4).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Non-finite floats become `null`.
        any::<f64>().prop_map(Value::from),
        "0x[0-9a-fA-F]{0,70}".prop_map(Value::String),
        "[0-9]{0,30}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
    ]
}

/// Object keys: mostly `known`, the fields the decoders look for, so
/// arbitrary trees reach them, and now and then anything.
fn key(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// Arbitrary well-formed JSON: nested arrays and objects whose keys are
/// mostly `known`.
pub(crate) fn json(known: &'static [&'static str]) -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 96, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(known), inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
        .boxed()
}

/// One change to a real-shaped reply: the value at one of its paths (any
/// depth, the whole reply included) replaced with arbitrary JSON, or
/// removed. `target` names the reply it applies to (a method, say).
#[derive(Clone, Debug)]
pub(crate) struct Edit {
    pub(crate) target: &'static str,
    at: Index,
    with: Option<Value>,
}

/// One to four edits, each aimed at one of `targets`.
pub(crate) fn edits(
    targets: &'static [&'static str],
    known: &'static [&'static str],
) -> impl Strategy<Value = Vec<Edit>> {
    let edit = (
        prop::sample::select(targets),
        any::<Index>(),
        prop::option::weighted(0.8, json(known)),
    )
        .prop_map(|(target, at, with)| Edit { target, at, with });
    prop::collection::vec(edit, 1..5)
}

/// Applies the edits aimed at `target` to `reply`, in order.
pub(crate) fn apply(edits: &[Edit], target: &str, reply: &mut Value) {
    for edit in edits.iter().filter(|e| e.target == target) {
        let mut paths = vec![String::new()];
        pointers(reply, "", &mut paths);
        let path = &paths[edit.at.index(paths.len())];
        match &edit.with {
            Some(value) => {
                if let Some(slot) = reply.pointer_mut(path) {
                    *slot = value.clone();
                }
            }
            None => remove(reply, path),
        }
    }
}

fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        let path = format!("{prefix}/{step}");
        out.push(path.clone());
        pointers(child, &path, out);
    }
}

fn remove(reply: &mut Value, path: &str) {
    let Some((parent, last)) = path.rsplit_once('/') else {
        *reply = Value::Null;
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match reply.pointer_mut(parent) {
        Some(Value::Object(fields)) => {
            fields.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

#[test]
fn edits_reach_every_depth_and_remove() {
    let mut reply = serde_json::json!({"a": {"b": [1, 2]}});
    let mut paths = Vec::new();
    pointers(&reply, "", &mut paths);
    assert_eq!(paths, ["/a", "/a/b", "/a/b/0", "/a/b/1"]);
    remove(&mut reply, "/a/b/0");
    assert_eq!(reply, serde_json::json!({"a": {"b": [2]}}));
    remove(&mut reply, "/a");
    assert_eq!(reply, serde_json::json!({}));
}

#[test]
fn excerpts_are_the_longest_prefix_within_the_limit() {
    use crate::error::{EXCERPT_BYTES, excerpt};
    check(".{0,300}", |text| {
        let cut = excerpt(&text);
        prop_assert!(text.starts_with(cut));
        prop_assert!(cut.len() <= EXCERPT_BYTES);
        if let Some(next) = text[cut.len()..].chars().next() {
            prop_assert!(cut.len() + next.len_utf8() > EXCERPT_BYTES);
        }
        Ok(())
    });
}
