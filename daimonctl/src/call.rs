//! `daimonctl call` and `daimonctl help`: parameters from the command line, and a method
//! described with its parameters' names and types.

use daimon::Error;
use daimon::client::Client;
use serde_json::{Map, Value, json};

use crate::show::raw;
use crate::{Failure, in_call};

/// A command-line argument as a parameter: JSON when it parses, else the string itself.
pub(crate) fn parse_arg(arg: &str) -> Value {
    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.into()))
}

/// `NAME=VALUE`, when `arg` has that form (a name: a letter or `_`, then letters, digits
/// and `_`).
fn named(arg: &str) -> Option<(&str, &str)> {
    let (name, value) = arg.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some((name, value))
}

/// The parameters of `call`: an object when every argument is `NAME=VALUE`, else an array
/// of positional ones (none: an empty array).
///
/// # Errors
///
/// A usage error when named and positional parameters are mixed, or a name repeats.
pub(crate) fn params(args: &[String]) -> Result<Value, Failure> {
    let pairs: Vec<Option<(&str, &str)>> = args.iter().map(|a| named(a)).collect();
    if args.is_empty() || pairs.iter().all(Option::is_none) {
        return Ok(Value::Array(args.iter().map(|a| parse_arg(a)).collect()));
    }
    let mut map = Map::new();
    for (arg, pair) in args.iter().zip(pairs) {
        let Some((name, value)) = pair else {
            return Err(Error::Usage(format!(
                "call: '{arg}' is positional among NAME=VALUE parameters: use one form \
                 (quote a string holding '=' as JSON: '\"a=b\"')"
            ))
            .into());
        };
        if map.insert(name.to_owned(), parse_arg(value)).is_some() {
            return Err(
                Error::Usage(format!("call: the parameter '{name}' is given twice")).into(),
            );
        }
    }
    Ok(Value::Object(map))
}

/// `help METHOD`: the description and each signature with its parameters' names and
/// types (`system.methodParams`), as text and as JSON.
pub(crate) fn help(client: &mut Client, method: &str) -> Result<(Value, String), Failure> {
    let mut call =
        |name: &str, params: Value| client.call(name, params).map_err(|e| in_call(name, e));
    let description = call("system.methodHelp", json!([method]))?;
    let described = call("system.methodParams", json!([method]))?;
    let described = described.as_array().cloned().unwrap_or_default();
    let mut lines = vec![raw(&description)];
    let mut signatures = Vec::new();
    let mut params = Vec::new();
    for d in &described {
        let list = d["params"].as_array().cloned().unwrap_or_default();
        let mut signature = vec![d["returns"].clone()];
        signature.extend(list.iter().map(|p| p["type"].clone()));
        let names: Vec<String> = list.iter().map(|p| raw(&p["name"])).collect();
        let signature = Value::Array(signature);
        lines.push(signature_line(method, &signature, Some(&names)));
        signatures.push(signature);
        params.push(Value::Array(list));
    }
    let result = json!({"description": description, "signatures": signatures, "params": params});
    Ok((result, lines.join("\n")))
}

/// `[ret, param...]` as `ret method(type name, ...)`, or `ret method(type, ...)` without
/// names.
pub(crate) fn signature_line(method: &str, signature: &Value, names: Option<&[String]>) -> String {
    match signature.as_array().map(Vec::as_slice) {
        Some([ret, types @ ..]) => {
            let params: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(i, t)| match names.and_then(|n| n.get(i)) {
                    Some(name) => format!("{} {name}", raw(t)),
                    None => raw(t),
                })
                .collect();
            format!("{} {method}({})", raw(ret), params.join(", "))
        }
        _ => raw(signature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn args_are_json_or_strings() {
        assert_eq!(parse_arg("5"), json!(5));
        assert_eq!(parse_arg("true"), json!(true));
        assert_eq!(parse_arg("[1,2]"), json!([1, 2]));
        assert_eq!(parse_arg(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_arg(r#""5""#), json!("5"));
        assert_eq!(parse_arg("hello"), json!("hello"));
        assert_eq!(parse_arg("[1,"), json!("[1,"));
        assert_eq!(parse_arg(""), json!(""));
    }

    #[test]
    fn every_arg_named_is_an_object_else_an_array() {
        let p = |args: &[&str]| params(&strings(args)).ok();
        assert_eq!(p(&[]), Some(json!([])));
        assert_eq!(p(&["hello", "5"]), Some(json!(["hello", 5])));
        assert_eq!(
            p(&[
                "message=hello there",
                "n=5",
                "flag=true",
                "list=[1]",
                "s=\"5\""
            ]),
            Some(json!({"message": "hello there", "n": 5, "flag": true, "list": [1], "s": "5"}))
        );
        assert_eq!(p(&["_x1=", "y=a=b"]), Some(json!({"_x1": "", "y": "a=b"})));
        // Not names: positional.
        for arg in ["=5", "1a=2", "a-b=3", "\"a=b\"", "{\"a\":\"=\"}"] {
            assert_eq!(p(&[arg]), Some(json!([parse_arg(arg)])), "{arg}");
        }
        // Mixed, or a name twice: usage errors.
        for args in [&["a=1", "b"][..], &["x", "a=1"], &["a=1", "a=2"]] {
            let e = params(&strings(args)).expect_err("a usage error");
            assert!(e.usage, "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn a_signature_reads_with_or_without_names() {
        let sigs = [
            json!(["string", "string"]),
            json!(["int", "int", "boolean"]),
            json!(["array"]),
        ];
        let message = ["message".to_owned()];
        assert_eq!(
            signature_line("m", &sigs[0], Some(&message)),
            "string m(string message)"
        );
        assert_eq!(signature_line("m", &sigs[1], None), "int m(int, boolean)");
        assert_eq!(signature_line("m", &sigs[2], Some(&[])), "array m()");
    }
}
