#!/usr/bin/env python3
"""Event subscriptions on a daimon control socket, checked by an independent client.

Usage: subscriptions.py unix:///path/to/socket | tcp://127.0.0.1:PORT

The daemon must be the `events_daemon` example. This client shares no code with the server:
raw bytes over a socket, the standard library and `msgpack`, as PROTOCOL.md describes the
wire ("Events"). It subscribes on JSON-RPC and on MessagePack-RPC connections, interleaves
calls with the events they cause, and unsubscribes. One line per check (`ok NAME` or
`FAIL NAME: DETAIL`); exit 1 if any failed. Every read has a timeout.
"""

import json
import socket
import sys
import time
import traceback

import msgpack

TIMEOUT = 5.0
FAILED = []


def connect(addr):
    if addr.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr[len("unix://"):])
    else:
        host, port = addr[len("tcp://"):].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.settimeout(TIMEOUT)
    return s


class Json:
    def __init__(self, addr):
        self.sock = connect(addr)
        self.buf = b""

    def send(self, method, params, id=None):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if id is not None:
            msg["id"] = id
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def next(self):
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no complete line")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


class Pack:
    def __init__(self, addr):
        self.sock = connect(addr)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, msg):
        self.sock.sendall(msgpack.packb(msg))

    def next(self):
        deadline = time.monotonic() + TIMEOUT
        while True:
            for msg in self.unpacker:
                return msg
            if time.monotonic() > deadline:
                raise TimeoutError("no complete message")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.unpacker.feed(chunk)


def check(name, fn, addr):
    try:
        fn(addr)
        print(f"ok {name}")
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check
        FAILED.append(name)
        print(f"FAIL {name}: {e!r}")
        traceback.print_exc()


def json_subscribe_interleaved(addr):
    c = Json(addr)
    c.send("daemon.subscribe", [["examples.noted"]], 1)
    reply = c.next()
    assert reply == {"jsonrpc": "2.0", "id": 1, "result": reply["result"]}, reply
    sub = reply["result"]
    assert isinstance(sub, int) and sub > 0, reply
    # Three calls pipelined: each reply, then (after it) the event it caused.
    for i in range(3):
        c.send("examples.note", {"text": f"n{i}"}, 10 + i)
    seen = [c.next() for _ in range(6)]
    replies = [m for m in seen if "id" in m]
    events = [m for m in seen if m.get("method") == "daemon.event"]
    assert [r["id"] for r in replies] == [10, 11, 12], seen
    assert [e["params"]["data"]["text"] for e in events] == ["n0", "n1", "n2"], seen
    for e in events:
        assert "id" not in e, e
        p = e["params"]
        assert set(p) == {"subscription", "name", "time", "data"}, p
        assert p["subscription"] == sub and p["name"] == "examples.noted", p
        assert abs(p["time"] - time.time()) < 60, p
    for i, e in enumerate(events):
        reply_at = next(k for k, m in enumerate(seen) if m.get("id") == 10 + i)
        assert seen.index(e) > reply_at, f"an event before its call's reply: {seen}"
    # A notification call (no id) still causes the event; it gets no reply.
    c.send("examples.note", ["quiet"])
    e = c.next()
    assert e["params"]["data"]["text"] == "quiet", e
    c.send("daemon.unsubscribe", [sub], 20)
    assert c.next() == {"jsonrpc": "2.0", "id": 20, "result": True}
    c.send("examples.note", ["after"], 21)
    assert c.next()["id"] == 21
    c.send("system.listMethods", [], 22)
    m = c.next()
    assert m["id"] == 22, f"an event after unsubscribe: {m}"
    assert "daemon.subscribe" in m["result"] and "daemon.unsubscribe" in m["result"], m


def json_bad_subscriptions(addr):
    c = Json(addr)
    for i, params in enumerate([[["a*b"]], [[]], [[1]], ["not a list"]]):
        c.send("daemon.subscribe", params, i)
        r = c.next()
        assert r["id"] == i and r["error"]["code"] == -32602, (params, r)
    c.send("daemon.unsubscribe", [12345], 9)
    r = c.next()
    assert r["error"]["code"] == -32000, r


def json_events_of_another_client(addr):
    watcher = Json(addr)
    watcher.send("daemon.subscribe", [["daemon.socket.*", "daemon.call.*"]], 1)
    assert watcher.next()["result"] > 0
    other = Json(addr)
    other.send("no.such.method", [], 1)
    assert other.next()["error"]["code"] == -32601
    other.sock.close()
    names = []
    while "daemon.socket.client.hangup" not in names:
        names.append(watcher.next()["params"]["name"])
    assert "daemon.socket.client.connect" in names, names
    assert "daemon.call.no.such.method" in names, names


def msgpack_subscribe_interleaved(addr):
    c = Pack(addr)
    c.send([0, 1, "daemon.subscribe", [["examples.noted"]]])
    reply = c.next()
    assert reply[0] == 1 and reply[1] == 1 and reply[2] is None, reply
    sub = reply[3]
    c.send([0, 2, "examples.note", ["packed"]])
    c.send([0, 3, "examples.note", ["twice"]])
    seen = [c.next() for _ in range(4)]
    responses = [m for m in seen if m[0] == 1]
    notes = [m for m in seen if m[0] == 2]
    assert [r[1] for r in responses] == [2, 3], seen
    assert all(r[3] is True for r in responses), seen
    assert len(notes) == 2, seen
    for n in notes:
        assert n[1] == "daemon.event" and len(n) == 3, n
        params = n[2]
        assert isinstance(params, list) and len(params) == 1, n
        assert params[0]["subscription"] == sub and params[0]["name"] == "examples.noted", n
    assert [n[2][0]["data"]["text"] for n in notes] == ["packed", "twice"], seen
    c.send([0, 4, "daemon.unsubscribe", [sub]])
    assert c.next() == [1, 4, None, True]


def msgpack_deferred_reply_and_events(addr):
    c = Pack(addr)
    c.send([0, 1, "daemon.subscribe", [["examples.*"]]])
    assert c.next()[3] > 0
    t = time.monotonic()
    c.send([0, 2, "examples.later", [100, {"k": [1, 2]}]])
    c.send([0, 3, "examples.note", ["behind"]])
    later = c.next()
    assert later == [1, 2, None, {"later": {"k": [1, 2]}}], later
    assert time.monotonic() - t >= 0.1
    # The timer that answered is an event too (`examples.later`, a TimerEvent).
    rest = [c.next() for _ in range(3)]
    assert [1, 3, None, True] in rest, rest
    names = sorted(m[2][0]["name"] for m in rest if m[0] == 2)
    assert names == ["examples.later", "examples.noted"], rest
    timer = next(m for m in rest if m[0] == 2 and m[2][0]["name"] == "examples.later")
    assert isinstance(timer[2][0]["data"]["timer"], int), timer


CHECKS = [
    ("json_subscribe_interleaved", json_subscribe_interleaved),
    ("json_bad_subscriptions", json_bad_subscriptions),
    ("json_events_of_another_client", json_events_of_another_client),
    ("msgpack_subscribe_interleaved", msgpack_subscribe_interleaved),
    ("msgpack_deferred_reply_and_events", msgpack_deferred_reply_and_events),
]


def main():
    addr = sys.argv[1]
    for name, fn in CHECKS:
        check(name, fn, addr)
    print(f"{len(CHECKS) - len(FAILED)} of {len(CHECKS)} checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
