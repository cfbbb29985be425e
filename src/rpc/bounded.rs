//! Parsing a JSON request without letting it grow: the value is built with a count of its
//! values and a cap on the length of a top-level batch, so a megabyte of `[1,1,…]` or of wide
//! params is refused after the first few thousand values instead of being expanded into
//! sixteen times its size in memory.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How large a request may be once parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The most values one request or batch holds, weighed by [`weight`]: a scalar or an
    /// object key 1, an array 2, an object 16.
    pub max_values: usize,
    /// The most requests a batch holds.
    pub max_batch: usize,
}

/// A parsed request or batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Anything but an array: a request, or something to be refused as one.
    One(Value),
    /// An array: a batch.
    Batch(Vec<Value>),
}

/// Why bytes were not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON.
    Syntax(String),
    /// A batch of more than this many requests.
    Batch(usize),
    /// More than this many values.
    Values(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Syntax(e) => write!(f, "{e}"),
            Refusal::Batch(n) => write!(f, "a batch of more than socketmaxbatch ({n}) requests"),
            Refusal::Values(n) => {
                write!(f, "a request of more than maxrequestvalues ({n}) values")
            }
        }
    }
}

/// Parses one whole JSON text within `bounds`.
///
/// # Errors
///
/// A [`Refusal`]: bad JSON, or a bound passed (found as soon as it is passed, before the rest
/// is parsed).
pub fn parse(bytes: &[u8], bounds: Bounds) -> Result<Parsed, Refusal> {
    let budget = Budget {
        left: Cell::new(bounds.max_values),
        over: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        budget: &budget,
        batch: Some(bounds.max_batch),
    };
    let value = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (value, budget.over.get()) {
        (_, Some(Over::Batch)) => Err(Refusal::Batch(bounds.max_batch)),
        (_, Some(Over::Values)) => Err(Refusal::Values(bounds.max_values)),
        (Err(e), None) => Err(Refusal::Syntax(e.to_string())),
        (Ok(Value::Array(batch)), None) => Ok(Parsed::Batch(batch)),
        (Ok(one), None) => Ok(Parsed::One(one)),
    }
}

/// The id of a request refused before it was parsed whole, when it is a plain one (a string
/// or a number); `null` otherwise. Nothing but the id is kept.
pub fn id_of(bytes: &[u8]) -> Value {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(Request).unwrap_or(Value::Null)
}

/// Finds the `id` member of an object, skipping everything else.
struct Request;

impl<'de> Visitor<'de> for Request {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut id = Value::Null;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            if key == "id" {
                id = map.next_value_seed(PlainId)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// A string or a number as itself, anything else skipped as `null`.
struct PlainId;

impl<'de> DeserializeSeed<'de> for PlainId {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PlainId {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id")
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
}

/// What a parsed value is, for its weight against `max_values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number, string, boolean, null or object key.
    Scalar,
    /// An array (its elements count apart).
    Array,
    /// An object (its keys and values count apart).
    Object,
}

/// How many values a parsed value counts for: its memory in units of a scalar's (a `Value`
/// is 32 bytes; an array adds a vector, an object a map node of several hundred bytes).
pub fn weight(kind: Kind) -> usize {
    match kind {
        Kind::Scalar => 1,
        Kind::Array => 2,
        Kind::Object => 16,
    }
}

#[derive(Debug, Clone, Copy)]
enum Over {
    Batch,
    Values,
}

struct Budget {
    left: Cell<usize>,
    over: Cell<Option<Over>>,
}

impl Budget {
    /// Counts one value, or fails the parse once the budget is spent.
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        self.take_as(Kind::Scalar)
    }

    fn take_as<E: serde::de::Error>(&self, kind: Kind) -> Result<(), E> {
        match self.left.get().checked_sub(weight(kind)) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(self.fail(Over::Values)),
        }
    }

    fn fail<E: serde::de::Error>(&self, over: Over) -> E {
        self.over.set(Some(over));
        E::custom("a bound was passed")
    }
}

/// Builds a [`Value`] like serde_json's own, counting each value against the budget; the
/// outermost array is a batch, capped at `batch` elements.
#[derive(Clone, Copy)]
struct Seed<'a> {
    budget: &'a Budget,
    batch: Option<usize>,
}

impl Seed<'_> {
    fn inner(self) -> Self {
        Seed {
            budget: self.budget,
            batch: None,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take_as(Kind::Array)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.inner())? {
            if self.batch.is_some_and(|cap| items.len() >= cap) {
                return Err(self.budget.fail(Over::Batch));
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take_as(Kind::Object)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // The key counts as a value: `{"a":0,"b":0,…}` costs a string per member.
            self.budget.take()?;
            let value = map.next_value_seed(self.inner())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A [`Refusal`] as the error a parse failure is answered with.
impl Refusal {
    /// `-32700` for bad JSON, `-32600` for a bound.
    pub fn to_rpc(&self) -> super::RpcError {
        match self {
            Refusal::Syntax(e) => super::RpcError::parse_error(e.clone()),
            bound => super::RpcError::invalid_request(bound.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WIDE: Bounds = Bounds {
        max_values: 1000,
        max_batch: 10,
    };

    #[test]
    fn parses_like_serde_json_within_the_bounds() {
        let text =
            r#"{"jsonrpc":"2.0","method":"m","params":[1,-2,3.5,"s",null,true,{"k":[]}],"id":7}"#;
        let want: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text.as_bytes(), WIDE), Ok(Parsed::One(want)));
        assert_eq!(
            parse(b"[1, 2]", WIDE),
            Ok(Parsed::Batch(vec![json!(1), json!(2)]))
        );
        assert_eq!(parse(b"[]", WIDE), Ok(Parsed::Batch(vec![])));
        assert_eq!(parse(b"\"x\"", WIDE), Ok(Parsed::One(json!("x"))));
    }

    #[test]
    fn a_batch_past_its_cap_is_refused() {
        let ten = format!("[{}]", ["{}"; 10].join(","));
        assert!(matches!(parse(ten.as_bytes(), WIDE), Ok(Parsed::Batch(b)) if b.len() == 10));
        let eleven = format!("[{}]", ["{}"; 11].join(","));
        assert_eq!(parse(eleven.as_bytes(), WIDE), Err(Refusal::Batch(10)));
        // Only the outermost array is a batch.
        let inner = format!("{{\"params\":[{}]}}", ["0"; 50].join(","));
        assert!(parse(inner.as_bytes(), WIDE).is_ok());
    }

    #[test]
    fn values_past_the_budget_are_refused_wherever_they_are() {
        let wide = format!("{{\"params\":[{}]}}", ["0"; 2000].join(","));
        assert_eq!(parse(wide.as_bytes(), WIDE), Err(Refusal::Values(1000)));
        let keys: Vec<String> = (0..600).map(|i| format!("\"k{i}\":0")).collect();
        let object = format!("{{{}}}", keys.join(","));
        assert_eq!(parse(object.as_bytes(), WIDE), Err(Refusal::Values(1000)));
        // The bound is reported even when the text is also bad further on.
        let bad = format!("[{}, oops", ["{}"; 20].join(","));
        assert_eq!(parse(bad.as_bytes(), WIDE), Err(Refusal::Batch(10)));
    }

    #[test]
    fn the_id_of_a_refused_request_is_found_alone() {
        assert_eq!(id_of(br#"{"params":[1,2,[3]],"id":"x"}"#), json!("x"));
        assert_eq!(id_of(br#"{"id":[1],"id":4}"#), json!(4));
        assert_eq!(id_of(br#"{"id":{"a":1}}"#), Value::Null);
        assert_eq!(id_of(b"[1]"), Value::Null);
        assert_eq!(id_of(br#"{"id":1,"oops"#), Value::Null);
    }

    #[test]
    fn bad_json_is_a_syntax_refusal() {
        assert!(matches!(parse(b"{", WIDE), Err(Refusal::Syntax(_))));
        assert!(matches!(parse(b"[1] 2", WIDE), Err(Refusal::Syntax(_))));
        assert_eq!(
            parse(b"[1,2", WIDE).unwrap_err().to_rpc().code,
            -32700,
            "a parse error"
        );
        assert_eq!(Refusal::Batch(3).to_rpc().code, -32600);
    }
}
