//! Signature types, signatures, and the params a handler gets once one matched.

use std::fmt;

use serde_json::{Map, Value};

use super::RpcError;
use super::base64;

/// A parameter or return type, with the XML-RPC names the ancestor used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// An integer (a JSON number without fraction, a MessagePack int).
    Int,
    /// A number (integers are accepted).
    Double,
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object (a MessagePack map).
    Struct,
    /// Bytes: a string of padded standard base64, or a MessagePack bin.
    Base64,
    /// `null` (nil).
    Null,
    /// Anything.
    Any,
}

impl Type {
    /// The type's name: `int`, `double`, `boolean`, `string`, `array`, `struct`, `base64`,
    /// `null`, `any`.
    pub fn name(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::Double => "double",
            Type::Boolean => "boolean",
            Type::String => "string",
            Type::Array => "array",
            Type::Struct => "struct",
            Type::Base64 => "base64",
            Type::Null => "null",
            Type::Any => "any",
        }
    }

    /// Whether `value` is of this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Type::Int => value.is_i64() || value.is_u64(),
            Type::Double => value.is_number(),
            Type::Boolean => value.is_boolean(),
            Type::String => value.is_string(),
            Type::Array => value.is_array(),
            Type::Struct => value.is_object(),
            Type::Base64 => value.as_str().is_some_and(|s| base64::decode(s).is_some()),
            Type::Null => value.is_null(),
            Type::Any => true,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One way to call a method: a return type and typed, named parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    returns: Type,
    params: Vec<(String, Type)>,
}

impl Default for Signature {
    fn default() -> Self {
        Signature {
            returns: Type::Any,
            params: Vec::new(),
        }
    }
}

impl Signature {
    /// The return type.
    pub fn returns(&self) -> Type {
        self.returns
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[(String, Type)] {
        &self.params
    }

    pub(crate) fn set_returns(&mut self, t: Type) {
        self.returns = t;
    }

    pub(crate) fn push(&mut self, t: Type, name: String) {
        self.params.push((name, t));
    }

    /// `[return, param...]` as `system.methodSignature` gives it.
    pub fn to_json(&self) -> Value {
        let mut list = vec![Value::from(self.returns.name())];
        list.extend(self.params.iter().map(|(_, t)| Value::from(t.name())));
        Value::Array(list)
    }

    /// `{"returns": type, "params": [{"name", "type"}...]}`, for `system.methodParams`.
    pub fn to_named_json(&self) -> Value {
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|(n, t)| serde_json::json!({"name": n, "type": t.name()}))
            .collect();
        serde_json::json!({"returns": self.returns.name(), "params": params})
    }

    /// Takes the values out of `params` (an array, an object, or null for none) in this
    /// signature's order, if they fit it.
    fn bind(&self, params: &mut Value) -> Option<Vec<Value>> {
        match params {
            Value::Null => self.params.is_empty().then(Vec::new),
            Value::Array(items) => {
                let fits = items.len() == self.params.len()
                    && items
                        .iter()
                        .zip(&self.params)
                        .all(|(v, (_, t))| t.accepts(v));
                fits.then(|| std::mem::take(items))
            }
            Value::Object(map) => {
                let fits = map.len() == self.params.len()
                    && self
                        .params
                        .iter()
                        .all(|(n, t)| map.get(n).is_some_and(|v| t.accepts(v)));
                fits.then(|| {
                    self.params
                        .iter()
                        .map(|(n, _)| map.remove(n).expect("checked above"))
                        .collect()
                })
            }
            _ => None,
        }
    }

    /// Describes the signature for error messages: `string examples.echo(string message)`.
    pub fn describe(&self, method: &str) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{t} {n}"))
            .collect();
        format!("{} {method}({})", self.returns, params.join(", "))
    }
}

/// Finds the first of `signatures` that `params` fit and binds them.
///
/// # Errors
///
/// `-32602 Invalid params`, naming every signature the method accepts.
pub(crate) fn bind<'s>(
    method: &str,
    signatures: &'s [Signature],
    mut params: Value,
) -> Result<Params<'s>, RpcError> {
    if !matches!(params, Value::Null | Value::Array(_) | Value::Object(_)) {
        return Err(RpcError::invalid_params(
            "params must be an array (by position) or an object (by name)",
        ));
    }
    for signature in signatures {
        if let Some(values) = signature.bind(&mut params) {
            return Ok(Params { signature, values });
        }
    }
    let expected: Vec<String> = signatures.iter().map(|s| s.describe(method)).collect();
    Err(RpcError::invalid_params(format!(
        "expected {}",
        expected.join(" or ")
    )))
}

/// The parameters of a call, named and typed by the signature that matched.
///
/// # Examples
///
/// ```
/// use daimon::rpc::{Method, Type};
///
/// let echo = Method::<daimon::DaemonHost>::new("examples.echo", |params, _ctx| {
///     Ok(params.str("message")?.into())
/// })
/// .param(Type::String, "message")
/// .returns(Type::String);
/// # let _ = echo;
/// ```
#[derive(Debug)]
pub struct Params<'s> {
    signature: &'s Signature,
    values: Vec<Value>,
}

impl<'s> Params<'s> {
    /// The signature that matched.
    pub fn signature(&self) -> &'s Signature {
        self.signature
    }

    /// The value of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.signature.params.iter().position(|(n, _)| n == name)?;
        self.values.get(i)
    }

    /// The value at position `i`.
    pub fn at(&self, i: usize) -> Option<&Value> {
        self.values.get(i)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values in signature order.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The parameters as an object, by name.
    pub fn to_object(&self) -> Map<String, Value> {
        self.signature
            .params
            .iter()
            .zip(&self.values)
            .map(|((n, _), v)| (n.clone(), v.clone()))
            .collect()
    }

    fn typed<'a, T>(
        &'a self,
        name: &str,
        what: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, RpcError> {
        self.get(name)
            .and_then(f)
            .ok_or_else(|| RpcError::invalid_params(format!("parameter '{name}' must be {what}")))
    }

    /// The string parameter `name`.
    ///
    /// # Errors
    ///
    /// `-32602` if there is no such parameter or it is not a string.
    pub fn str(&self, name: &str) -> Result<&str, RpcError> {
        self.typed(name, "a string", Value::as_str)
    }

    /// The integer parameter `name`.
    ///
    /// # Errors
    ///
    /// `-32602` if there is no such parameter or it is not an integer that fits an `i64`.
    pub fn i64(&self, name: &str) -> Result<i64, RpcError> {
        self.typed(name, "an integer", Value::as_i64)
    }

    /// The number parameter `name`.
    ///
    /// # Errors
    ///
    /// `-32602` if there is no such parameter or it is not a number.
    pub fn f64(&self, name: &str) -> Result<f64, RpcError> {
        self.typed(name, "a number", Value::as_f64)
    }

    /// The boolean parameter `name`.
    ///
    /// # Errors
    ///
    /// `-32602` if there is no such parameter or it is not a boolean.
    pub fn bool(&self, name: &str) -> Result<bool, RpcError> {
        self.typed(name, "a boolean", Value::as_bool)
    }

    /// The base64 parameter `name`, decoded.
    ///
    /// # Errors
    ///
    /// `-32602` if there is no such parameter or it is not valid base64.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, RpcError> {
        self.typed(name, "base64", |v| v.as_str().and_then(base64::decode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig(ret: Type, params: &[(&str, Type)]) -> Signature {
        let mut s = Signature::default();
        s.set_returns(ret);
        for (n, t) in params {
            s.push(*t, n.to_string());
        }
        s
    }

    #[test]
    fn types_accept_their_values() {
        assert!(Type::Int.accepts(&json!(5)) && !Type::Int.accepts(&json!(5.5)));
        assert!(Type::Double.accepts(&json!(5)) && Type::Double.accepts(&json!(5.5)));
        assert!(Type::Base64.accepts(&json!("Zm9v")) && !Type::Base64.accepts(&json!("Zm9")));
        assert!(Type::Struct.accepts(&json!({})) && !Type::Struct.accepts(&json!([])));
        assert!(Type::Null.accepts(&json!(null)) && Type::Any.accepts(&json!([1])));
    }

    #[test]
    fn positional_and_named_params_bind_in_signature_order() {
        let sigs = [sig(
            Type::Int,
            &[("minuend", Type::Int), ("subtrahend", Type::Int)],
        )];
        let p = bind("subtract", &sigs, json!([42, 23])).unwrap();
        assert_eq!(
            (p.i64("minuend").unwrap(), p.i64("subtrahend").unwrap()),
            (42, 23)
        );
        let p = bind("subtract", &sigs, json!({"subtrahend": 23, "minuend": 42})).unwrap();
        assert_eq!(p.into_values(), vec![json!(42), json!(23)]);
    }

    #[test]
    fn first_fitting_signature_wins_and_none_names_them_all() {
        let sigs = [
            sig(Type::Array, &[]),
            sig(Type::Int, &[("name", Type::String)]),
        ];
        assert_eq!(bind("worker.status", &sigs, json!(null)).unwrap().len(), 0);
        assert_eq!(bind("worker.status", &sigs, json!([])).unwrap().len(), 0);
        let p = bind("worker.status", &sigs, json!(["handyman"])).unwrap();
        assert_eq!(p.signature().returns(), Type::Int);
        let e = bind("worker.status", &sigs, json!([5])).unwrap_err();
        assert_eq!(e.code, RpcError::INVALID_PARAMS);
        let data = e.data.unwrap();
        assert_eq!(
            data,
            json!("expected array worker.status() or int worker.status(string name)")
        );
        for bad in [
            json!({"name": "x", "extra": 1}),
            json!({"nom": "x"}),
            json!("x"),
        ] {
            assert!(bind("worker.status", &sigs, bad).is_err());
        }
    }

    #[test]
    fn accessors_check_types() {
        let sigs = [sig(Type::Any, &[("a", Type::Any)])];
        let p = bind("m", &sigs, json!(["Zm9v"])).unwrap();
        assert_eq!(p.bytes("a").unwrap(), b"foo");
        assert_eq!(p.str("a").unwrap(), "Zm9v");
        assert_eq!(p.i64("a").unwrap_err().code, RpcError::INVALID_PARAMS);
        assert!(p.get("b").is_none() && p.at(0).is_some());
        assert_eq!(sigs[0].to_json(), json!(["any", "any"]));
    }
}
