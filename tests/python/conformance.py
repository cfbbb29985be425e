#!/usr/bin/env python3
"""Conformance of a daimon control socket, checked by an independent client.

Usage: conformance.py unix:///path/to/socket | tcp://127.0.0.1:PORT

The daemon must be the `conformance_daemon` example: it serves the methods of the examples
section of the JSON-RPC 2.0 specification (https://www.jsonrpc.org/specification), so those
examples are replayed here byte for byte, plus `echo`, `fail` and `panic`. Everything else
comes from PROTOCOL.md at the repository root: framing, MessagePack-RPC, introspection.

This client shares no code with the server: it speaks raw bytes over a socket, with only the
standard library and `msgpack`. It prints one line per check (`ok NAME` or
`FAIL NAME: DETAIL`) and exits 1 if any check failed. Every read has a timeout.
"""

import base64
import json
import socket
import sys
import time
import traceback

import msgpack

TIMEOUT = 5.0

# The standard messages, from PROTOCOL.md.
MESSAGES = {
    -32700: "Parse error",
    -32600: "Invalid Request",
    -32601: "Method not found",
    -32602: "Invalid params",
    -32603: "Internal error",
    -32000: "Server error",
    -31001: "Recursive system.multicall forbidden",
}

# The methods of the conformance daemon.
OWN_METHODS = [
    "echo",
    "fail",
    "get_data",
    "notify_hello",
    "notify_sum",
    "panic",
    "subtract",
    "sum",
    "update",
]
SYSTEM_METHODS = [
    "daemon.shutdown",
    "daemon.status",
    "system.auth",
    "system.getCapabilities",
    "system.listMethods",
    "system.methodHelp",
    "system.methodSignature",
    "system.multicall",
]


class CheckFailed(Exception):
    """A check's expectation did not hold."""


def fail(msg):
    raise CheckFailed(msg)


def expect(cond, msg):
    if not cond:
        fail(msg)


# ---------------------------------------------------------------------------------------
# Connections


def parse_addr(addr):
    if addr.startswith("unix://"):
        path = addr[len("unix://"):]
        if not path:
            raise ValueError("empty unix socket path in %r" % addr)
        return (socket.AF_UNIX, path)
    if addr.startswith("tcp://"):
        hostport = addr[len("tcp://"):]
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError("expected tcp://HOST:PORT, got %r" % addr)
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return (family, (host, int(port)))
    raise ValueError("expected unix:///path or tcp://HOST:PORT, got %r" % addr)


class Conn:
    """One connection to the daemon; every read times out after TIMEOUT seconds."""

    def __init__(self, addr):
        family, target = addr
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if family != socket.AF_UNIX:
            # So that 1-byte sends leave as separate segments.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.connect(target)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_json(self, value):
        self.send(json.dumps(value).encode() + b"\n")

    def _recv(self, what):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            fail("no bytes within %.0f s while waiting for %s (buffered: %r)"
                 % (TIMEOUT, what, self.buf[:200]))
        except ConnectionResetError:
            fail("connection reset while waiting for %s (buffered: %r)" % (what, self.buf[:200]))
        if not chunk:
            fail("connection closed while waiting for %s (buffered: %r)" % (what, self.buf[:200]))
        return chunk

    def line(self):
        """The next reply line, without its `\\n`."""
        while b"\n" not in self.buf:
            self.buf += self._recv("a reply line")
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def json_line(self):
        """The next reply line, parsed (its compactness is a check of its own)."""
        raw = self.line()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail("reply line is not JSON (%s): %r" % (e, raw[:300]))

    def exact(self, n):
        while len(self.buf) < n:
            self.buf += self._recv("%d bytes" % n)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until(self, delim):
        while delim not in self.buf:
            self.buf += self._recv("%r" % delim)
            if len(self.buf) > 1 << 16:
                fail("no %r in the first 64 KiB: %r" % (delim, self.buf[:200]))
        head, _, self.buf = self.buf.partition(delim)
        return head

    def content_length_reply(self):
        """A Content-Length framed reply, parsed; checks the header's exact form."""
        head = self.until(b"\r\n\r\n")
        expect(head.startswith(b"Content-Length: "),
               "reply header is %r, want 'Content-Length: N'" % head)
        num = head[len(b"Content-Length: "):]
        expect(num.isdigit(), "reply header is %r, want 'Content-Length: N'" % head)
        body = self.exact(int(num))
        expect(not body.endswith(b"\n"), "the body ends with a newline: %r" % body)
        self.last_body = body
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail("the %d-byte body is not JSON (%s): %r" % (int(num), e, body[:300]))

    def mp(self):
        """The next MessagePack value."""
        if self.buf:
            self.unpacker.feed(self.buf)
            self.buf = b""
        while True:
            try:
                return self.unpacker.unpack()
            except msgpack.OutOfData:
                pass
            self.unpacker.feed(self._recv("a MessagePack reply"))

    def expect_eof(self):
        """The daemon closes the connection, with nothing more sent."""
        expect(not self.buf, "bytes after the last reply: %r" % self.buf[:200])
        leftover = b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                fail("connection still open %.0f s after the reply (bytes since: %r)"
                     % (TIMEOUT, leftover[:200]))
            except ConnectionResetError:
                chunk = b""  # closed with our bytes unread: still closed
            if not chunk:
                break
            leftover += chunk
            if time.monotonic() > deadline:
                break
        expect(not leftover, "bytes after the last reply: %r" % leftover[:200])


def check_compact(raw):
    """Compact JSON: no whitespace outside strings."""
    text = raw.decode("utf-8")
    in_str = escaped = False
    for i, c in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in " \t\r\n":
            fail("reply is not compact JSON (whitespace at %d): %r" % (i, raw[:300]))


# ---------------------------------------------------------------------------------------
# Comparisons


def same(a, b):
    """Deep equality that tells apart int, float and bool (1, 1.0 and True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def reply_problem(reply, kind, rid, want):
    """Why `reply` is not the JSON-RPC reply expected, or None.

    kind "result": want is the result. kind "error": want is the code, or (code, message).
    """
    if not isinstance(reply, dict):
        return "reply is not an object: %r" % (reply,)
    if reply.get("jsonrpc") != "2.0":
        return "no \"jsonrpc\": \"2.0\" in %r" % (reply,)
    if "id" not in reply:
        return "no id in %r" % (reply,)
    if not same(reply["id"], rid):
        return "id is %r, want %r in %r" % (reply["id"], rid, reply)
    if kind == "result":
        if set(reply) != {"jsonrpc", "id", "result"}:
            return "want exactly jsonrpc, id, result in %r" % (reply,)
        if not same(reply["result"], want):
            return "result is %r, want %r" % (reply["result"], want)
        return None
    code, message = want if isinstance(want, tuple) else (want, MESSAGES[want])
    if set(reply) != {"jsonrpc", "id", "error"}:
        return "want exactly jsonrpc, id, error in %r" % (reply,)
    err = reply["error"]
    if not isinstance(err, dict):
        return "error is not an object: %r" % (reply,)
    if not {"code", "message"} <= set(err) <= {"code", "message", "data"}:
        return "error must have code, message and maybe data: %r" % (err,)
    if not same(err["code"], code):
        return "error code is %r, want %r in %r" % (err["code"], code, reply)
    if err["message"] != message:
        return "error message is %r, want %r in %r" % (err["message"], message, reply)
    if "data" in err and not isinstance(err["data"], str):
        return "error data is not a string: %r" % (err,)
    return None


def expect_result(reply, rid, result):
    problem = reply_problem(reply, "result", rid, result)
    if problem:
        fail(problem)


def expect_error(reply, rid, code):
    problem = reply_problem(reply, "error", rid, code)
    if problem:
        fail(problem)


def expect_batch(replies, expected):
    """`replies` holds exactly `expected`, a list of (kind, id, want), in any order."""
    if not isinstance(replies, list):
        fail("batch reply is not an array: %r" % (replies,))
    left = list(replies)
    for kind, rid, want in expected:
        for i, reply in enumerate(left):
            if reply_problem(reply, kind, rid, want) is None:
                del left[i]
                break
        else:
            fail("no reply matches (%s, id %r, %r) in %r" % (kind, rid, want, replies))
    expect(not left, "unexpected replies %r in %r" % (left, replies))


def req(method, params=None, rid=None, notification=False):
    r = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        r["params"] = params
    if not notification:
        r["id"] = rid
    return r


def send_bytewise(conn, data):
    """Sends `data` one byte at a time, each its own segment."""
    for i in range(len(data)):
        conn.send(data[i:i + 1])
        time.sleep(0.002)


def follow_up(conn, rid="follow-up"):
    """Sends subtract(42, 23) and checks the next reply line is its reply, so nothing was
    sent for what came before."""
    conn.send_json(req("subtract", [42, 23], rid))
    raw = conn.line()
    try:
        reply = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        fail("the next bytes are not the follow-up's reply: %r" % raw[:300])
    problem = reply_problem(reply, "result", rid, 19)
    if problem:
        fail("the next reply is not the follow-up's (a reply was sent for what came before?): "
             "%s" % problem)


def mp_result(reply, msgid, result):
    expect(isinstance(reply, list) and len(reply) == 4,
           "reply is not a 4-element array: %r" % (reply,))
    expect(same(reply, [1, msgid, None, result]),
           "reply is %r, want %r" % (reply, [1, msgid, None, result]))


def mp_error(reply, msgid, code, message=None):
    expect(isinstance(reply, list) and len(reply) == 4,
           "reply is not a 4-element array: %r" % (reply,))
    expect(reply[0] == 1 and type(reply[0]) is int, "reply type is %r, want 1" % (reply[0],))
    expect(same(reply[1], msgid), "msgid is %r, want %r in %r" % (reply[1], msgid, reply))
    expect(reply[3] is None, "result is %r, want nil in %r" % (reply[3], reply))
    err = reply[2]
    expect(isinstance(err, list) and len(err) == 2,
           "error is %r, want [code, message]" % (err,))
    expect(same(err[0], code), "error code is %r, want %r in %r" % (err[0], code, reply))
    expect(isinstance(err[1], str), "error message is not a str: %r" % (err,))
    if message is not None:
        expect(err[1] == message, "error message is %r, want %r" % (err[1], message))
    else:
        std = MESSAGES[code]
        expect(err[1].startswith(std), "error message is %r, want %r" % (err[1], std))


def mp_follow_up(conn, msgid=4242):
    conn.send(msgpack.packb([0, msgid, "subtract", [42, 23]], use_bin_type=True))
    reply = conn.mp()
    if not same(reply, [1, msgid, None, 19]):
        fail("the next reply is not the follow-up's (a reply was sent for what came before?): "
             "%r" % (reply,))


def mp_call(conn, msgid, method, params):
    conn.send(msgpack.packb([0, msgid, method, params], use_bin_type=True))
    return conn.mp()


# ---------------------------------------------------------------------------------------
# The checks

CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


# The examples of the JSON-RPC 2.0 specification, byte for byte.

@check("spec: positional parameters")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}')
        expect_result(c.json_line(), 1, 19)
        c.send(b'{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}')
        expect_result(c.json_line(), 2, -19)


@check("spec: named parameters")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "subtract", '
               b'"params": {"subtrahend": 23, "minuend": 42}, "id": 3}')
        expect_result(c.json_line(), 3, 19)
        c.send(b'{"jsonrpc": "2.0", "method": "subtract", '
               b'"params": {"minuend": 42, "subtrahend": 23}, "id": 4}')
        expect_result(c.json_line(), 4, 19)


@check("spec: notifications get no reply")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}')
        c.send(b'{"jsonrpc": "2.0", "method": "foobar"}')
        follow_up(c)


@check("spec: non-existent method")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
        expect_error(c.json_line(), "1", -32601)


@check("spec: invalid JSON, then the connection closes")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("spec: invalid Request object")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
        expect_error(c.json_line(), None, -32600)
        follow_up(c)


@check("spec: batch, invalid JSON, then the connection closes")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[\n'
               b'  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n'
               b'  {"jsonrpc": "2.0", "method"\n'
               b']')
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("spec: empty array")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[]')
        reply = c.json_line()
        expect(isinstance(reply, dict), "want a single error object, got %r" % (reply,))
        expect_error(reply, None, -32600)
        follow_up(c)


@check("spec: invalid batch [1]")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[1]')
        expect_batch(c.json_line(), [("error", None, -32600)])
        follow_up(c)


@check("spec: invalid batch [1,2,3]")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[1,2,3]')
        expect_batch(c.json_line(), [("error", None, -32600)] * 3)
        follow_up(c)


@check("spec: batch")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[\n'
               b'        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n'
               b'        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},\n'
               b'        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},\n'
               b'        {"foo": "boo"},\n'
               b'        {"jsonrpc": "2.0", "method": "foo.get", '
               b'"params": {"name": "myself"}, "id": "5"},\n'
               b'        {"jsonrpc": "2.0", "method": "get_data", "id": "9"} \n'
               b'    ]')
        expect_batch(c.json_line(), [
            ("result", "1", 7),
            ("result", "2", 19),
            ("error", None, -32600),
            ("error", "5", -32601),
            ("result", "9", ["hello", 5]),
        ])
        follow_up(c)


@check("spec: batch of notifications gets no bytes at all")
def _(addr):
    with Conn(addr) as c:
        c.send(b'[\n'
               b'        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},\n'
               b'        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}\n'
               b'    ]')
        follow_up(c)


# JSON-RPC beyond the examples.

@check("json: id null is a request")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":null}\n')
        expect_result(c.json_line(), None, 19)


@check("json: string and number ids come back as sent")
def _(addr):
    with Conn(addr) as c:
        for rid in ["abc", "", "42", 0, -7, 2**53, "\u00e9\u2603 \"q\""]:
            c.send_json(req("subtract", [42, 23], rid))
            expect_result(c.json_line(), rid, 19)


@check("json: failing notifications get no reply")
def _(addr):
    with Conn(addr) as c:
        c.send_json(req("subtract", ["a", "b"], notification=True))
        c.send_json(req("fail", [-32099, "custom"], notification=True))
        c.send_json(req("panic", notification=True))
        c.send_json(req("foobar", [1], notification=True))
        follow_up(c)


@check("json: invalid params -32602 with data")
def _(addr):
    with Conn(addr) as c:
        for params in (["a", "b"], [1], [1, 2, 3], {"minuend": 1}, {"minuend": 1, "x": 2}):
            c.send_json(req("subtract", params, 5))
            reply = c.json_line()
            expect_error(reply, 5, -32602)
            expect(isinstance(reply["error"].get("data"), str),
                   "-32602 for %r without a data string: %r" % (params, reply))


@check("json: echo round-trips values")
def _(addr):
    value = {"s": "\u00e9\u2603\U0001F600 \"\\\n\t", "n": [0, -1, 2**62, 2.5, -0.125],
             "b": [True, False], "z": None, "o": {"nested": [[], {}]}}
    with Conn(addr) as c:
        c.send_json(req("echo", [value], 1))
        expect_result(c.json_line(), 1, value)
        c.send_json(req("echo", {"value": "named"}, 2))
        expect_result(c.json_line(), 2, "named")


@check("json: valid JSON that is not a request")
def _(addr):
    with Conn(addr) as c:
        # A first byte `1` would not choose JSON-RPC (PROTOCOL.md): start with a request.
        follow_up(c, "first")
        for raw in (b'1', b'"x"', b'null', b'{"foo": "boo"}', b'{"jsonrpc":"2.0"}',
                    b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":[1]}',
                    b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":{"a":1}}',
                    b'{"jsonrpc":"2.0","method":"subtract","params":"bar","id":1}'):
            c.send(raw + b"\n")
            reply = c.json_line()
            problem = reply_problem(reply, "error", None, -32600)
            if problem and raw.endswith(b'"id":1}'):
                # the id could be read: either answer is fair
                problem = reply_problem(reply, "error", 1, -32600)
            expect(problem is None, "for %r: %s" % (raw, problem))
        follow_up(c)


@check("json: jsonrpc other than 2.0 is invalid")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"1.0","method":"subtract","params":[42,23],"id":1}\n')
        reply = c.json_line()
        if reply_problem(reply, "error", None, -32600):
            expect_error(reply, 1, -32600)


@check("json: a raw newline inside a string is a parse error")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"echo","params":["a\nb"],"id":1}\n')
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("json: first byte not JSON nor MessagePack: parse error, then close")
def _(addr):
    with Conn(addr) as c:
        c.send(b'hello\n')
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("json: panic gives -32603 and the connection goes on")
def _(addr):
    with Conn(addr) as c:
        c.send_json(req("panic", [], 1))
        expect_error(c.json_line(), 1, -32603)
        c.send_json(req("panic", None, 2))
        expect_error(c.json_line(), 2, -32603)
        follow_up(c)
    with Conn(addr) as c:
        follow_up(c, "new connection")


@check("json: a handler's own error keeps its code and message")
def _(addr):
    with Conn(addr) as c:
        c.send_json(req("fail", [-32099, "custom"], 1))
        expect_error(c.json_line(), 1, (-32099, "custom"))
        c.send_json(req("fail", {"code": 42, "message": "the answer"}, 2))
        expect_error(c.json_line(), 2, (42, "the answer"))


# Framing.

@check("framing: one request per connection")
def _(addr):
    for i in range(3):
        with Conn(addr) as c:
            c.send_json(req("subtract", [42, i], i))
            expect_result(c.json_line(), i, 42 - i)


@check("framing: several newline-delimited requests in one send")
def _(addr):
    with Conn(addr) as c:
        c.send(b"".join(json.dumps(req("subtract", [100, i], i)).encode() + b"\n"
                        for i in range(20)))
        for i in range(20):
            expect_result(c.json_line(), i, 100 - i)


@check("framing: plain concatenated values, no delimiter")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}'
               b'{"jsonrpc":"2.0","method":"subtract","params":[23,42],"id":2}'
               b'[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":3}]'
               b'{"jsonrpc":"2.0","method":"get_data","id":4}')
        expect_result(c.json_line(), 1, 19)
        expect_result(c.json_line(), 2, -19)
        expect_batch(c.json_line(), [("result", 3, 7)])
        expect_result(c.json_line(), 4, ["hello", 5])


@check("framing: a request in 1-byte sends")
def _(addr):
    with Conn(addr) as c:
        data = b'{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": "slow"}\n'
        send_bytewise(c, data)
        expect_result(c.json_line(), "slow", 19)
        follow_up(c)


@check("framing: a request, then the client half-closes: the reply still comes")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}')
        c.sock.shutdown(socket.SHUT_WR)
        expect_result(c.json_line(), 1, 19)
        c.expect_eof()
    with Conn(addr) as c:
        body = b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":2}'
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        c.sock.shutdown(socket.SHUT_WR)
        expect_result(c.content_length_reply(), 2, 19)
        c.expect_eof()
    with Conn(addr) as c:
        c.send(msgpack.packb([0, 3, "subtract", [42, 23]], use_bin_type=True))
        c.sock.shutdown(socket.SHUT_WR)
        mp_result(c.mp(), 3, 19)
        c.expect_eof()


@check("json: garbage after a valid request: its reply, then -32700, then close")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1} xyz\n')
        expect_result(c.json_line(), 1, 19)
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("json: invalid UTF-8 in a string is a parse error")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc":"2.0","method":"echo","params":["\xff\xfe"],"id":1}\n')
        expect_error(c.json_line(), None, -32700)
        c.expect_eof()


@check("framing: leading whitespace and a request spanning lines")
def _(addr):
    with Conn(addr) as c:
        c.send(b'\r\n \t\n{\n  "jsonrpc": "2.0",\n  "method": "subtract",\n'
               b'  "params": [\n    42,\n    23\n  ],\n  "id": 7\n}\n')
        expect_result(c.json_line(), 7, 19)
        c.send(b'\n\n[\n{"jsonrpc":"2.0",\r\n"method":"sum","params":[1,2,4],"id":8}\n]\n')
        expect_batch(c.json_line(), [("result", 8, 7)])


@check("framing: replies end with a newline and are compact")
def _(addr):
    with Conn(addr) as c:
        c.send(b'{"jsonrpc": "2.0", "method": "echo", "params": [{"a": [1, 2], "b": "x y"}], '
               b'"id": 1}')
        raw = c.line()
        check_compact(raw)
        expect_result(json.loads(raw), 1, {"a": [1, 2], "b": "x y"})
        c.send(b'{"jsonrpc": "2.0", "method": "subtract", "params": ["a", 1], "id": 2}')
        raw = c.line()
        check_compact(raw)
        expect_error(json.loads(raw), 2, -32602)
        c.send(b'[{"jsonrpc": "2.0", "method": "foobar", "id": 3}, '
               b'{"jsonrpc": "2.0", "method": "sum", "params": [1, 2, 4], "id": 4}]')
        raw = c.line()
        check_compact(raw)
        expect_batch(json.loads(raw), [("error", 3, -32601), ("result", 4, 7)])
        c.send(b'{"jsonrpc": "2.0", "method": "system.getCapabilities", "id": 5}')
        check_compact(c.line())
        expect(not c.buf, "bytes after the reply's newline: %r" % c.buf)


@check("framing: many requests pipelined, replies in order")
def _(addr):
    with Conn(addr) as c:
        n = 200
        c.send(b"".join(json.dumps(req("echo", [i], i)).encode() + b"\n" for i in range(n)))
        for i in range(n):
            expect_result(c.json_line(), i, i)


@check("content-length: odd header case, header and body in separate sends")
def _(addr):
    with Conn(addr) as c:
        body = b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}'
        c.send(b"content-LENGTH: %d\r\n\r\n" % len(body))
        time.sleep(0.05)
        c.send(body)
        expect_result(c.content_length_reply(), 1, 19)
        check_compact(c.last_body)
        expect(not c.buf, "bytes after the body: %r" % c.buf)


@check("content-length: two requests back to back on one connection")
def _(addr):
    with Conn(addr) as c:
        b1 = json.dumps(req("subtract", [42, 23], 1)).encode()
        b2 = json.dumps(req("get_data", None, "two")).encode()
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(b1), b1)
               + b"Content-Length: %d\r\n\r\n%s" % (len(b2), b2))
        expect_result(c.content_length_reply(), 1, 19)
        expect_result(c.content_length_reply(), "two", ["hello", 5])
        # a third, later, with a non-ASCII body: N counts bytes
        b3 = json.dumps(req("echo", ["\u00e9\u2603"], 3), ensure_ascii=False).encode()
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(b3), b3))
        expect_result(c.content_length_reply(), 3, "\u00e9\u2603")
        expect(not c.buf, "bytes after the body: %r" % c.buf)


@check("content-length: errors and batches in Content-Length framing")
def _(addr):
    with Conn(addr) as c:
        b1 = b'{"jsonrpc":"2.0","method":"foobar","id":1}'
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(b1), b1))
        expect_error(c.content_length_reply(), 1, -32601)
        b2 = b'[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":2},' \
             b'{"jsonrpc":"2.0","method":"notify_hello","params":[7]}]'
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(b2), b2))
        expect_batch(c.content_length_reply(), [("result", 2, 7)])


@check("content-length: 1-byte sends, and a notification gets no reply")
def _(addr):
    with Conn(addr) as c:
        body = b'{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"slow"}'
        send_bytewise(c, b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        expect_result(c.content_length_reply(), "slow", 7)
        note = b'{"jsonrpc":"2.0","method":"notify_hello","params":[7]}'
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(note), note))
        body = b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":"after"}'
        c.send(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        expect_result(c.content_length_reply(), "after", 19)
        expect(not c.buf, "bytes after the body: %r" % c.buf)


@check("content-length: an LSP Content-Type header is accepted")
def _(addr):
    with Conn(addr) as c:
        body = b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}'
        c.send(b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; "
               b"charset=utf-8\r\n\r\n%s" % (len(body), body))
        expect_result(c.content_length_reply(), 1, 19)


# MessagePack-RPC.

@check("msgpack: a request in 1-byte sends")
def _(addr):
    with Conn(addr) as c:
        send_bytewise(c, msgpack.packb([0, 77, "echo", [{"k": [1, "two", b"3"]}]],
                                       use_bin_type=True))
        mp_result(c.mp(), 77, {"k": [1, "two", base64.b64encode(b"3").decode()]})
        mp_follow_up(c)


@check("msgpack: msgid 0 and 2**32-1")
def _(addr):
    with Conn(addr) as c:
        mp_result(mp_call(c, 0, "subtract", [42, 23]), 0, 19)
        mp_result(mp_call(c, 2**32 - 1, "subtract", [23, 42]), 2**32 - 1, -19)
        mp_result(mp_call(c, 1, "get_data", []), 1, ["hello", 5])


@check("msgpack: method as str and as bin")
def _(addr):
    with Conn(addr) as c:
        mp_result(mp_call(c, 1, "subtract", [42, 23]), 1, 19)
        mp_result(mp_call(c, 2, b"subtract", [42, 23]), 2, 19)
        mp_result(mp_call(c, 3, b"system.methodHelp", [b"subtract".decode()]), 3,
                  "Subtracts subtrahend from minuend")


@check("msgpack: named params as a map")
def _(addr):
    with Conn(addr) as c:
        mp_result(mp_call(c, 9, "subtract", {"subtrahend": 23, "minuend": 42}), 9, 19)


@check("msgpack: a bin param reaches the handler as base64")
def _(addr):
    with Conn(addr) as c:
        for i, data in enumerate([b"\x00\x01\xfe\xff", b"", b"hello world!", bytes(range(256))]):
            want = base64.b64encode(data).decode()
            mp_result(mp_call(c, i, "echo", [data]), i, want)


@check("msgpack: str8, str16 and str32 strings")
def _(addr):
    with Conn(addr) as c:
        # [0, 7, str16 "subtract", [42, 23]]
        c.send(b"\x94\x00\x07\xda\x00\x08subtract\x92\x2a\x17")
        mp_result(c.mp(), 7, 19)
        # [0, 8, str8 "subtract", [42, 23]]
        c.send(b"\x94\x00\x08\xd9\x08subtract\x92\x2a\x17")
        mp_result(c.mp(), 8, 19)
        # [0, 9, str32 "subtract", [42, 23]]
        c.send(b"\x94\x00\x09\xdb\x00\x00\x00\x08subtract\x92\x2a\x17")
        mp_result(c.mp(), 9, 19)
        # [0, 10, "echo", [str16 "hello"]]
        c.send(b"\x94\x00\x0a\xa4echo\x91\xda\x00\x05hello")
        mp_result(c.mp(), 10, "hello")
        # array16 for the request and its params: [0, 11, "sum", [1, 2, 4]]
        c.send(b"\xdc\x00\x04\x00\x0b\xa3sum\xdc\x00\x03\x01\x02\x04")
        mp_result(c.mp(), 11, 7)


@check("msgpack: msgid in uint16 and uint64 encodings")
def _(addr):
    with Conn(addr) as c:
        # [0, uint16 5, "sum", [1, 2, 4]] and [0, uint64 6, "sum", [1, 2, 4]]
        c.send(b"\x94\x00\xcd\x00\x05\xa3sum\x93\x01\x02\x04")
        mp_result(c.mp(), 5, 7)
        c.send(b"\x94\x00\xcf\x00\x00\x00\x00\x00\x00\x00\x06\xa3sum\x93\x01\x02\x04")
        mp_result(c.mp(), 6, 7)


@check("msgpack: a notification gets no reply")
def _(addr):
    with Conn(addr) as c:
        c.send(msgpack.packb([2, "notify_hello", [7]], use_bin_type=True))
        c.send(msgpack.packb([2, "update", [1, 2, 3, 4, 5]], use_bin_type=True))
        c.send(msgpack.packb([2, "panic", []], use_bin_type=True))
        mp_follow_up(c)


@check("msgpack: an unknown notification is ignored")
def _(addr):
    with Conn(addr) as c:
        c.send(msgpack.packb([2, "foobar", []], use_bin_type=True))
        c.send(msgpack.packb([2, "foo.get", {"name": "myself"}], use_bin_type=True))
        mp_follow_up(c)


@check("msgpack: errors -32601 and -32602")
def _(addr):
    with Conn(addr) as c:
        mp_error(mp_call(c, 3, "foobar", []), 3, -32601)
        mp_error(mp_call(c, 4, "subtract", ["a", "b"]), 4, -32602)
        mp_error(mp_call(c, 0, "subtract", [1]), 0, -32602)
        mp_follow_up(c)


@check("msgpack: a bad shape gets -32600 with its msgid")
def _(addr):
    with Conn(addr) as c:
        c.send(msgpack.packb([0, 5, 123, []], use_bin_type=True))
        mp_error(c.mp(), 5, -32600)
        mp_follow_up(c)


@check("msgpack: garbage after a call: its reply, then -32700 with nil msgid, then close")
def _(addr):
    with Conn(addr) as c:
        c.send(msgpack.packb([0, 1, "subtract", [42, 23]], use_bin_type=True) + b"\xc1")
        mp_result(c.mp(), 1, 19)
        mp_error(c.mp(), None, -32700)
        rest = c.unpacker.read_bytes(1 << 20)
        expect(not rest, "bytes after the parse error: %r" % rest[:200])
        c.expect_eof()


@check("msgpack: a value that is not a request: -32700, then close")
def _(addr):
    with Conn(addr) as c:
        c.send(msgpack.packb(["not", "a", "request"], use_bin_type=True))
        # no usable msgid: the parse error, never msgid 0
        mp_error(c.mp(), None, -32700)
        c.expect_eof()


@check("msgpack: many calls pipelined in one send, replies in order")
def _(addr):
    with Conn(addr) as c:
        n = 200
        c.send(b"".join(msgpack.packb([0, i, "sum", [i, 1, 2]], use_bin_type=True)
                        for i in range(n)))
        for i in range(n):
            mp_result(c.mp(), i, i + 3)


@check("msgpack: panic gives -32603 and the connection goes on")
def _(addr):
    with Conn(addr) as c:
        mp_error(mp_call(c, 1, "panic", []), 1, -32603)
        mp_follow_up(c)


@check("msgpack: a handler's own error keeps its code and message")
def _(addr):
    with Conn(addr) as c:
        mp_error(mp_call(c, 1, "fail", [-32099, "custom"]), 1, -32099, "custom")


# Introspection, in both protocols.

def json_call(addr, method, params=None):
    with Conn(addr) as c:
        c.send_json(req(method, params, 1))
        reply = c.json_line()
    expect(isinstance(reply, dict) and "result" in reply and same(reply.get("id"), 1),
           "%s(%r): %r" % (method, params, reply))
    return reply["result"]


def msgpack_call(addr, method, params=None):
    with Conn(addr) as c:
        reply = mp_call(c, 1, method, [] if params is None else params)
    expect(isinstance(reply, list) and len(reply) == 4 and reply[:3] == [1, 1, None],
           "%s(%r): %r" % (method, params, reply))
    return reply[3]


CALLERS = [("json", json_call), ("msgpack", msgpack_call)]


def introspection_checks(proto, call):
    @check("%s: system.listMethods" % proto)
    def _(addr):
        names = call(addr, "system.listMethods")
        expect(isinstance(names, list) and all(isinstance(n, str) for n in names),
               "not a list of strings: %r" % (names,))
        missing = [m for m in OWN_METHODS + SYSTEM_METHODS if m not in names]
        expect(not missing, "missing %r in %r" % (missing, names))
        extra = [m for m in ("foobar", "foo.get") if m in names]
        expect(not extra, "%r listed: %r" % (extra, names))
        expect(names == sorted(names), "not sorted: %r" % (names,))
        expect(len(set(names)) == len(names), "duplicates: %r" % (names,))

    @check("%s: system.methodSignature" % proto)
    def _(addr):
        sig = call(addr, "system.methodSignature", ["subtract"])
        expect(same(sig, [["int", "int", "int"]]), "subtract: %r" % (sig,))
        sig = call(addr, "system.methodSignature", ["get_data"])
        expect(same(sig, [["array"]]), "get_data: %r" % (sig,))
        sig = call(addr, "system.methodSignature", ["update"])
        expect(same(sig, [["null", "int", "int", "int", "int", "int"]]), "update: %r" % (sig,))
        sig = call(addr, "system.methodSignature", ["echo"])
        expect(same(sig, [["any", "any"]]), "echo: %r" % (sig,))
        sig = call(addr, "system.methodSignature", ["system.methodHelp"])
        expect(same(sig, [["string", "string"]]), "system.methodHelp: %r" % (sig,))

    @check("%s: system.methodHelp" % proto)
    def _(addr):
        text = call(addr, "system.methodHelp", ["subtract"])
        expect(text == "Subtracts subtrahend from minuend", "subtract: %r" % (text,))
        text = call(addr, "system.methodHelp", ["system.listMethods"])
        expect(isinstance(text, str) and text, "system.listMethods: %r" % (text,))

    @check("%s: system.getCapabilities" % proto)
    def _(addr):
        caps = call(addr, "system.getCapabilities")
        expect(isinstance(caps, dict), "not a struct: %r" % (caps,))
        for name in ("json-rpc", "introspection", "msgpack-rpc", "system.multicall"):
            cap = caps.get(name)
            expect(isinstance(cap, dict) and isinstance(cap.get("specUrl"), str)
                   and "specVersion" in cap, "%s: %r in %r" % (name, cap, caps))

    @check("%s: system.multicall" % proto)
    def _(addr):
        calls = [{"methodName": "subtract", "params": [42, 23]},
                 {"methodName": "foobar", "params": []},
                 {"methodName": "fail", "params": [-32099, "custom"]},
                 {"methodName": "get_data", "params": []},
                 {"methodName": 5, "params": []},
                 "not a call"]
        out = call(addr, "system.multicall", [calls])
        expect(isinstance(out, list) and len(out) == 6, "want 6 entries: %r" % (out,))
        for i in (4, 5):
            f = out[i]
            expect(isinstance(f, dict) and set(f) == {"faultCode", "faultString"}
                   and type(f["faultCode"]) is int and isinstance(f["faultString"], str),
                   "entry %d is %r, want a fault" % (i, f))
        expect(same(out[0], [19]), "entry 0 is %r, want [19]" % (out[0],))
        for i, code, msg in ((1, -32601, MESSAGES[-32601]), (2, -32099, "custom")):
            f = out[i]
            expect(isinstance(f, dict) and set(f) == {"faultCode", "faultString"}
                   and same(f["faultCode"], code) and f["faultString"] == msg,
                   "entry %d is %r, want {faultCode: %d, faultString: %r}" % (i, f, code, msg))
        expect(same(out[3], [["hello", 5]]), "entry 3 is %r, want [['hello', 5]]" % (out[3],))

    @check("%s: daemon.status" % proto)
    def _(addr):
        status = call(addr, "daemon.status")
        expect(isinstance(status, dict), "not a struct: %r" % (status,))
        missing = [k for k in ("pid", "version", "uptime", "socket", "connections", "calls",
                               "workers") if k not in status]
        expect(not missing, "missing %r in %r" % (missing, status))
        expect(type(status["pid"]) is int and status["pid"] > 1, "pid: %r" % (status,))
        expect(type(status["connections"]) is int and status["connections"] >= 1,
               "connections: %r" % (status,))

    @check("%s: nested system.multicall is refused" % proto)
    def _(addr):
        calls = [{"methodName": "system.multicall",
                  "params": [[{"methodName": "subtract", "params": [42, 23]}]]},
                 {"methodName": "subtract", "params": [42, 23]}]
        out = call(addr, "system.multicall", [calls])
        expect(isinstance(out, list) and len(out) == 2, "want 2 entries: %r" % (out,))
        f = out[0]
        expect(isinstance(f, dict) and same(f.get("faultCode"), -31001)
               and f.get("faultString") == MESSAGES[-31001],
               "entry 0 is %r, want {faultCode: -31001, faultString: %r}"
               % (f, MESSAGES[-31001]))
        expect(same(out[1], [19]), "entry 1 is %r, want [19]" % (out[1],))


for _proto, _call in CALLERS:
    introspection_checks(_proto, _call)


@check("json: introspection errors")
def _(addr):
    with Conn(addr) as c:
        c.send_json(req("system.methodSignature", ["foobar"], 1))
        reply = c.json_line()
        expect("error" in reply, "methodSignature(foobar) succeeded: %r" % (reply,))
        c.send_json(req("system.methodHelp", [], 2))
        expect_error(c.json_line(), 2, -32602)


# ---------------------------------------------------------------------------------------


def preflight(addr):
    """Whether the daemon answers at all; if not, the checks would only time out."""
    try:
        with Conn(addr) as c:
            c.send(b'{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}\n')
            c.line()
    except CheckFailed as e:
        return "a plain call got no reply: %s" % e
    except OSError as e:
        return "cannot connect: %s" % e
    return None


def main(argv):
    if len(argv) != 2:
        print("usage: %s unix:///path | tcp://HOST:PORT" % argv[0], file=sys.stderr)
        return 2
    try:
        addr = parse_addr(argv[1])
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    problem = preflight(addr)
    if problem:
        print("FAIL preflight (%s): %s" % (argv[1], problem))
        print("not running the %d checks: the daemon does not answer" % len(CHECKS))
        return 1
    failed = 0
    for name, fn in CHECKS:
        try:
            fn(addr)
        except CheckFailed as e:
            failed += 1
            print("FAIL %s: %s" % (name, e))
        except Exception as e:  # a bug of the daemon shows as any exception here
            failed += 1
            tb = traceback.extract_tb(e.__traceback__)[-1]
            print("FAIL %s: %s: %s (line %d)" % (name, type(e).__name__, e, tb.lineno))
        else:
            print("ok %s" % name)
        sys.stdout.flush()
    print("%d checks, %d passed, %d failed" % (len(CHECKS), len(CHECKS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
