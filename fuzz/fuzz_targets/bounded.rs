//! Bounded JSON parsing (`rpc::bounded::parse`) against serde_json's own.
//!
//! Input: `[b] text`. `b` picks the bounds: bits 0-3 `max_values` (1 to 32,768), bits 4-7
//! `max_batch` (1 to 32,768).
//!
//! Properties:
//! - what serde_json refuses, `parse` refuses; what `parse` accepts, serde_json parses to the
//!   same value (an array is a batch of its elements);
//! - a refusal for a bound is true: the text is JSON, and, as a top-level array, it has more
//!   elements than `max_batch`, or it parses without the values bound (to the same value;
//!   every value parsed counts, a repeated key's too, so the result's count is a lower bound);
//! - `id_of` never panics, and what it finds is the id serde_json sees (when plain).
#![no_main]

use daimon::rpc::bounded::{self, Bounds, Parsed, Refusal};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(|v| 1 + count(v)).sum::<usize>(),
        _ => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, text)) = data.split_first() else {
        return;
    };
    let bounds = Bounds {
        max_values: 1 << (b & 15),
        max_batch: 1 << (b >> 4),
    };
    let ours = bounded::parse(text, bounds);
    let theirs = serde_json::from_slice::<Value>(text);
    match (&ours, &theirs) {
        (Ok(Parsed::Batch(batch)), Ok(Value::Array(a))) => assert_eq!(batch, a),
        (Ok(Parsed::One(one)), Ok(v)) => {
            assert!(!v.is_array());
            assert_eq!(one, v);
        }
        (Ok(_), Err(e)) => panic!("accepted what serde_json refuses: {e}"),
        (Ok(Parsed::Batch(_)), Ok(_)) => panic!("a batch that is not an array"),
        (Err(Refusal::Syntax(_)), Ok(_)) => {
            // serde_json's recursion limit is the same; nothing else differs.
            panic!("refused as bad JSON what serde_json parses")
        }
        (Err(Refusal::Syntax(_)), Err(_)) => {}
        (Err(Refusal::Batch(n)), Ok(v)) => {
            assert!(v.as_array().is_some_and(|a| a.len() > *n), "a false batch refusal");
        }
        (Err(Refusal::Values(n)), Ok(v)) => {
            // Every value parsed counts, a repeated key's too (serde_json keeps the last): the
            // values of the result are a lower bound only. Without the bound, the same value.
            let unbounded = Bounds {
                max_values: usize::MAX,
                ..bounds
            };
            match bounded::parse(text, unbounded) {
                Ok(Parsed::One(one)) => assert_eq!(&one, v),
                Ok(Parsed::Batch(batch)) => assert_eq!(&Value::Array(batch), v),
                Err(Refusal::Batch(_)) => {}
                Err(e) => panic!("a false values refusal ({n}, {} values): {e}", count(v)),
            }
        }
        // A bound passed before the bad byte: refused either way.
        (Err(Refusal::Batch(_) | Refusal::Values(_)), Err(_)) => {}
    }
    let id = bounded::id_of(text);
    if let Ok(Value::Object(o)) = &theirs {
        match o.get("id") {
            Some(v @ (Value::String(_) | Value::Number(_))) => assert_eq!(&id, v),
            _ => assert_eq!(id, Value::Null),
        }
    }
});
