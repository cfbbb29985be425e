//! JSON-RPC 2.0: requests, notifications and batches, exactly as the specification says.

use std::io::Write;

use serde::ser::{Serialize, SerializeMap, Serializer};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;

use super::{Engine, Meta, RpcError};

/// A reply object for `id` carrying `outcome`, built as a value (what [`Reply`] writes).
#[cfg(test)]
fn reply(id: Value, outcome: Result<Value, RpcError>) -> Value {
    let mut object = Map::with_capacity(3);
    object.insert("jsonrpc".into(), Value::from("2.0"));
    match outcome {
        Ok(result) => {
            object.insert("result".into(), result);
        }
        Err(e) => {
            let mut error = Map::with_capacity(3);
            error.insert("code".into(), Value::from(e.code));
            error.insert("message".into(), Value::from(e.message));
            if let Some(data) = e.data {
                error.insert("data".into(), data);
            }
            object.insert("error".into(), Value::Object(error));
        }
    }
    object.insert("id".into(), id);
    Value::Object(object)
}

/// One reply, serialized straight from the request's id and outcome.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a>(pub &'a Value, pub &'a Result<Value, RpcError>);

impl Serialize for Reply<'_> {
    /// Compact, with the members in the order of `reply`'s map (error or result, then id and
    /// jsonrpc, sorted), written without building the map (the hot path of every call).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Reply(id, outcome) = *self;
        match outcome {
            Ok(result) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("jsonrpc", "2.0")?;
                m.serialize_entry("result", result)?;
                m.end()
            }
            Err(e) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("error", &ErrorObject(e))?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("jsonrpc", "2.0")?;
                m.end()
            }
        }
    }
}

struct ErrorObject<'a>(&'a RpcError);

impl Serialize for ErrorObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("code", &e.code)?;
        if let Some(data) = &e.data {
            m.serialize_entry("data", data)?;
        }
        m.serialize_entry("message", &e.message)?;
        m.end()
    }
}

/// Writes one reply into `out`.
pub fn write_reply(out: &mut impl Write, id: &Value, outcome: &Result<Value, RpcError>) {
    // Serializing a JSON value cannot fail, and our writers do not either.
    let written = serde_json::to_writer(out, &Reply(id, outcome));
    debug_assert!(written.is_ok());
}

/// Runs the requests of a (non-empty) batch in order, writing the array of their replies into
/// `out` as each comes, so no reply is held twice; returns whether anything was written (a
/// batch of notifications has no reply).
pub fn write_batch(
    batch: Vec<Value>,
    engine: &mut dyn Engine,
    meta: &Meta<'_>,
    out: &mut impl Write,
) -> bool {
    // A reply inside a batch cannot wait for a worker.
    let meta = Meta {
        deferrable: false,
        ..*meta
    };
    let mut first = true;
    for one in batch {
        let Some((id, outcome)) = call(one, engine, &meta) else {
            continue;
        };
        let _ = out.write_all(if first { b"[" } else { b"," });
        first = false;
        write_reply(out, &id, &outcome);
    }
    if !first {
        let _ = out.write_all(b"]");
    }
    !first
}

/// A request's id and outcome.
pub type Outcome = (Value, Result<Value, RpcError>);

/// Runs one request (whatever the value is: a non-object is an invalid request); `None` for
/// a notification, which has no reply.
pub fn call(value: Value, engine: &mut dyn Engine, meta: &Meta<'_>) -> Option<Outcome> {
    let Value::Object(mut request) = value else {
        return Some((
            Value::Null,
            Err(RpcError::invalid_request("a request is a JSON object")),
        ));
    };
    // An absent id makes a notification; `"id": null` is a request answered with id null.
    let id = request.remove("id");
    let valid_id = match &id {
        None | Some(Value::Null | Value::String(_)) => true,
        Some(Value::Number(_)) => true,
        Some(_) => false,
    };
    let reply_id = if valid_id {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let invalid = |detail: &str| Some((reply_id.clone(), Err(RpcError::invalid_request(detail))));
    if !valid_id {
        return invalid("id must be a string, a number or null");
    }
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("jsonrpc must be \"2.0\"");
    }
    let Some(Value::String(method)) = request.remove("method") else {
        return invalid("method must be a string");
    };
    let params = match request.remove("params") {
        None => Value::Null,
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => return invalid("params must be an array or an object"),
    };
    let Some(id) = id else {
        let meta = Meta {
            deferrable: false,
            ..*meta
        };
        let _ = engine.call(&meta, &method, params);
        return None;
    };
    Some((id, engine.call(meta, &method, params)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The methods of the specification's examples.
    struct Spec(Vec<String>);

    impl Engine for Spec {
        fn call(&mut self, _: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
            self.0.push(method.to_owned());
            let ints = |p: &Value| -> Vec<i64> {
                match p {
                    Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
                    Value::Object(o) => vec![
                        o["minuend"].as_i64().unwrap(),
                        o["subtrahend"].as_i64().unwrap(),
                    ],
                    _ => vec![],
                }
            };
            match method {
                "subtract" => {
                    let v = ints(&params);
                    Ok(json!(v[0] - v[1]))
                }
                "sum" => Ok(json!(ints(&params).iter().sum::<i64>())),
                "get_data" => Ok(json!(["hello", 5])),
                "update" | "notify_hello" | "notify_sum" => Ok(Value::Null),
                other => Err(RpcError::method_not_found(other)),
            }
        }
    }

    fn run(request: Value) -> (Option<Value>, Vec<String>) {
        let mut engine = Spec(Vec::new());
        let meta = Meta {
            peer: "test",
            connections: 1,
            deferrable: true,
            connection: None,
        };
        let reply = match request {
            Value::Array(batch) if batch.is_empty() => Some(reply(
                Value::Null,
                Err(RpcError::invalid_request("an empty batch")),
            )),
            Value::Array(batch) => {
                let mut out = Vec::new();
                write_batch(batch, &mut engine, &meta, &mut out)
                    .then(|| serde_json::from_slice(&out).expect("a JSON batch reply"))
            }
            one => call(one, &mut engine, &meta).map(|(id, outcome)| reply(id, outcome)),
        };
        (reply, engine.0)
    }

    fn strip_data(mut v: Value) -> Value {
        match &mut v {
            Value::Object(o) => {
                if let Some(Value::Object(e)) = o.get_mut("error") {
                    e.remove("data");
                }
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    *x = strip_data(x.take());
                }
            }
            _ => {}
        }
        v
    }

    #[test]
    fn specification_examples() {
        let cases = [
            (
                json!({"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}),
                Some(json!({"jsonrpc": "2.0", "result": 19, "id": 1})),
            ),
            (
                json!({"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}),
                Some(json!({"jsonrpc": "2.0", "result": 19, "id": 3})),
            ),
            (
                json!({"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}),
                None,
            ),
            (json!({"jsonrpc": "2.0", "method": "foobar"}), None),
            (
                json!({"jsonrpc": "2.0", "method": "foobar", "id": "1"}),
                Some(
                    json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}),
                ),
            ),
            (
                json!({"jsonrpc": "2.0", "method": 1, "params": "bar"}),
                Some(
                    json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}),
                ),
            ),
            (
                json!([]),
                Some(
                    json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}),
                ),
            ),
            (
                json!([1]),
                Some(
                    json!([{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}]),
                ),
            ),
            (
                json!([
                   {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
                   {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
                ]),
                None,
            ),
            (
                json!({"jsonrpc": "2.0", "method": "get_data", "id": null}),
                Some(json!({"jsonrpc": "2.0", "result": ["hello", 5], "id": null})),
            ),
        ];
        for (request, expected) in cases {
            let (got, _) = run(request.clone());
            assert_eq!(got.map(strip_data), expected, "request {request}");
        }
    }

    #[test]
    fn mixed_batch() {
        let (got, calls) = run(json!([
            {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
            {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
            {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
            {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
        ]));
        assert_eq!(
            strip_data(got.unwrap()),
            json!([
                {"jsonrpc": "2.0", "result": 7, "id": "1"},
                {"jsonrpc": "2.0", "result": 19, "id": "2"},
                {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
                {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
                {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
            ])
        );
        assert_eq!(
            calls,
            ["sum", "notify_hello", "subtract", "foo.get", "get_data"]
        );
    }

    #[test]
    fn replies_serialize_as_their_value_does() {
        for (id, outcome) in [
            (json!(1), Ok(json!({"a": [1, "x"]}))),
            (json!("i"), Err(RpcError::invalid_params("expected int"))),
            (Value::Null, Err(RpcError::new(-1, "no data"))),
        ] {
            let direct = serde_json::to_string(&Reply(&id, &outcome)).unwrap();
            let via_value = serde_json::to_string(&reply(id, outcome)).unwrap();
            assert_eq!(direct, via_value);
        }
    }

    #[test]
    fn invalid_requests_with_a_valid_id_keep_it() {
        for bad in [
            json!({"method": "sum", "id": 4}),
            json!({"jsonrpc": "1.0", "method": "sum", "id": 4}),
            json!({"jsonrpc": "2.0", "method": "sum", "params": 3, "id": 4}),
        ] {
            let (got, calls) = run(bad);
            let got = got.unwrap();
            assert_eq!(got["error"]["code"], -32600);
            assert_eq!(got["id"], 4);
            assert!(calls.is_empty());
        }
        let (got, _) = run(json!({"jsonrpc": "2.0", "method": "sum", "id": [1]}));
        assert_eq!(got.unwrap()["id"], Value::Null);
    }
}
