use super::*;
use crate::bus::{PostAction, TestHost};

fn registry() -> Methods<TestHost> {
    let mut m = Methods::new();
    m.register(
        Method::new("examples.echo", |p, _| Ok(p.str("message")?.into()))
            .description("I'm here to reply your data")
            .param(Type::String, "message")
            .returns(Type::String),
    )
    .unwrap();
    m.register(Method::new("boom", |_, _| panic!("kaboom")))
        .unwrap();
    m.register(
        Method::new("fail", |_, _| Err(RpcError::new(-32099, "custom"))).returns(Type::Null),
    )
    .unwrap();
    m
}

fn call(
    m: &mut Methods<TestHost>,
    bus: &mut Bus<TestHost>,
    host: &mut TestHost,
    name: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let meta = Meta {
        peer: "test",
        connections: 1,
        deferrable: true,
        connection: None,
    };
    let mut engine = DaemonEngine {
        methods: m,
        bus,
        host,
    };
    engine.call(&meta, name, params)
}

#[test]
fn calls_handler_errors_and_panics() {
    let (mut m, mut bus, mut host) = (registry(), Bus::<TestHost>::new(), TestHost::default());
    assert_eq!(
        call(&mut m, &mut bus, &mut host, "examples.echo", json!(["hi"])),
        Ok(json!("hi"))
    );
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "examples.echo",
            json!({"message": "by name"})
        ),
        Ok(json!("by name"))
    );
    assert_eq!(
        call(&mut m, &mut bus, &mut host, "fail", Value::Null).unwrap_err(),
        RpcError::new(-32099, "custom")
    );
    let e = crate::testing::quiet_panics(|| {
        call(&mut m, &mut bus, &mut host, "boom", Value::Null).unwrap_err()
    });
    assert_eq!(e.code, RpcError::INTERNAL_ERROR);
    assert!(e.data.unwrap().as_str().unwrap().contains("kaboom"));
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "examples.echo",
            json!(["still here"])
        ),
        Ok(json!("still here"))
    );
    assert_eq!(
        call(&mut m, &mut bus, &mut host, "nope", Value::Null)
            .unwrap_err()
            .code,
        RpcError::METHOD_NOT_FOUND
    );
    assert_eq!(m.calls(), 6);
}

#[test]
fn listeners_observe_and_refuse_calls_before_they_run() {
    let (mut m, mut bus, mut host) = (registry(), Bus::<TestHost>::new(), TestHost::default());
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    bus.on("daemon.rpc.*", move |event, _| {
        let rpc = event.downcast_ref::<RpcEvent>().unwrap();
        log.borrow_mut()
            .push((rpc.method().to_owned(), rpc.params().clone()));
        if rpc.params()["message"] == "forbidden" {
            rpc.refuse(RpcError::server_error("refused by policy"));
        }
        PostAction::Continue
    })
    .unwrap();
    assert_eq!(
        call(&mut m, &mut bus, &mut host, "examples.echo", json!(["ok"])),
        Ok(json!("ok"))
    );
    let e = call(
        &mut m,
        &mut bus,
        &mut host,
        "examples.echo",
        json!(["forbidden"]),
    )
    .unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (-32000, "refused by policy"));
    assert_eq!(
        *seen.borrow(),
        [
            ("examples.echo".to_owned(), json!({"message": "ok"})),
            ("examples.echo".to_owned(), json!({"message": "forbidden"}))
        ]
    );
}

#[test]
fn introspection_and_multicall() {
    let (mut m, mut bus, mut host) = (registry(), Bus::<TestHost>::new(), TestHost::default());
    let names = call(
        &mut m,
        &mut bus,
        &mut host,
        "system.listMethods",
        Value::Null,
    )
    .unwrap();
    for n in ["examples.echo", "system.multicall"] {
        assert!(names.as_array().unwrap().contains(&json!(n)), "{n}");
    }
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "system.methodHelp",
            json!(["examples.echo"])
        ),
        Ok(json!("I'm here to reply your data"))
    );
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "system.methodSignature",
            json!(["examples.echo"])
        ),
        Ok(json!([["string", "string"]]))
    );
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "system.methodParams",
            json!(["examples.echo"])
        ),
        Ok(json!([{"returns": "string", "params": [{"name": "message", "type": "string"}]}]))
    );
    assert_eq!(
        call(
            &mut m,
            &mut bus,
            &mut host,
            "system.methodSignature",
            json!(["nope"])
        )
        .unwrap_err()
        .code,
        RpcError::METHOD_NOT_FOUND
    );
    let caps = call(
        &mut m,
        &mut bus,
        &mut host,
        "system.getCapabilities",
        Value::Null,
    )
    .unwrap();
    assert_eq!(caps["json-rpc"]["specVersion"], 2);
    let results = call(
        &mut m,
        &mut bus,
        &mut host,
        "system.multicall",
        json!([[
            {"methodName": "examples.echo", "params": ["a"]},
            {"methodName": "fail", "params": []},
            {"methodName": "system.multicall", "params": [[]]},
            {"params": []}
        ]]),
    )
    .unwrap();
    assert_eq!(results[0], json!(["a"]));
    assert_eq!(
        results[1],
        json!({"faultCode": -32099, "faultString": "custom"})
    );
    assert_eq!(results[2]["faultCode"], RpcError::RECURSIVE_MULTICALL);
    assert_eq!(results[3]["faultCode"], RpcError::INVALID_REQUEST);
}

#[test]
fn duplicates_are_refused_and_the_registry_knows_no_daemon_or_worker_method() {
    let mut m = registry();
    assert!(m.get("daemon.shutdown").is_none() && m.get("worker.list").is_none());
    let e = m
        .register(Method::new("system.listMethods", |_, _| Ok(Value::Null)))
        .unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
}
