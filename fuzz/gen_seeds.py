#!/usr/bin/env python3
"""Writes the seed inputs in seeds/<target>/ (run from anywhere; overwrites them).

A seed is two bytes, then the raw protocol bytes: the target's parameter byte and a zero
plan count (one read), unless a seed says otherwise. See README.md for the input layouts.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def w(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixstr(s):
    return bytes([0xA0 | len(s)]) + s


req = b'{"jsonrpc":"2.0","method":"echo","params":["hello"],"id":1}'
notif = b'{"jsonrpc":"2.0","method":"echo","params":["n"]}'
batch = (
    b'[{"jsonrpc":"2.0","method":"echo","params":["a"],"id":"1"},'
    b'{"jsonrpc":"2.0","method":"echo","params":["b"]},{"foo":"boo"},'
    b'{"jsonrpc":"2.0","method":"nope","params":{"name":"x"},"id":null},1]'
)
named = b'{"jsonrpc": "2.0",\n "method": "echo",\n "params": {"message": "h\\u00e9\\"llo\\\\"},\n "id": 1.5e3}'
cl = b"Content-Length: %d\r\n\r\n" % len(req) + req
cl2 = (
    b"content-type: application/vscode-jsonrpc; charset=utf-8\r\ncontent-length:%d\r\n\r\n"
    % len(batch)
    + batch
)
auth = b'{"jsonrpc":"2.0","method":"system.auth","params":["pw"],"id":0}\n' + req + b"\n"
scalars = b'1 true "x" null -2.5e-3 [] {} \n'

mp_req = bytes([0x94, 0x00, 0x01]) + fixstr(b"echo") + bytes([0x91]) + fixstr(b"hello")
mp_bin = bytes([0x94, 0x00, 0xCD, 0x01, 0x00, 0xC4, 4]) + b"echo" + bytes([0x91, 0xC4, 3]) + b"foo"
mp_str16 = (
    bytes([0x94, 0x00, 0xCE, 0, 1, 0, 0, 0xDA, 0, 4])
    + b"echo"
    + bytes([0x81])
    + fixstr(b"message")
    + fixstr(b"hi")
)
mp_notif = (
    bytes([0x93, 0x02]) + fixstr(b"echo") + bytes([0x92, 0xCB]) + struct.pack(">d", 1.5) + bytes([0xD0, 0x85])
)
mp_resp = bytes([0x94, 0x01, 0x05, 0xC0, 0x03])
mp_bad = bytes([0x94, 0x00, 0x07, 0x7B, 0xC0])  # the method is not a string
mp_big = bytes([0x94, 0x00, 0x01, 0xDB, 0xFF, 0xFF, 0xFF, 0xFF])  # a str32 of 4 GiB
mp_nested = (
    bytes([0x94, 0x00, 0x02])
    + fixstr(b"echo")
    + bytes([0x91, 0x92, 0x93, 0x01, 0xC3, 0xC2, 0xDE, 0, 1])
    + fixstr(b"k")
    + bytes([0xDC, 0, 1, 0xC0])
)
mp_ext = bytes([0x94, 0x00, 0x03]) + fixstr(b"echo") + bytes([0x91, 0xD6, 0xFF, 0, 0, 0, 1])
mp_ext8 = bytes([0x94, 0x00, 0x04]) + fixstr(b"echo") + bytes([0x91, 0xC7, 0x01, 0x05, 0x08])

json_streams = {
    "request": req + b"\n",
    "notification": notif + b"\n",
    "batch": batch + b"\n",
    "named_pretty": named,
    "two_concatenated": req + req,
    "scalars": scalars,
    "invalid_bracket": b'{"a":[1}',
    "auth_then_echo": auth,
}
for k, v in json_streams.items():
    w("framing", k, b"\x00\x00" + v)
    w("connection", k, b"\x74\x00" + v)
w("framing", "content_length", b"\x00\x00" + cl)
w("framing", "content_length_two_headers", b"\x00\x00" + cl2)
w("framing", "content_length_padded", b"\xcd\x00" + cl)
w("connection", "content_length", b"\x74\x00" + cl + cl2)
# Small reads, the client reading all its output before each.
w("connection", "request_split_reads", b"\x74\x03\x85\x83\x81" + req + b"\n" + req)
w("connection", "secret_auth", b"\x75\x00" + auth)
w("connection", "refused", b"\x76\x00" + req + b"\n" + req)
w("connection", "garbage", b"\x74\x00GET / HTTP/1.1\r\n\r\n")
w("connection", "too_large", b"\x00\x00" + b'{"jsonrpc":"2.0","method":"echo","params":["' + b"x" * 64 + b'"],"id":1}')
mps = {
    "request": mp_req,
    "bin_method": mp_bin,
    "str16_method_named_params": mp_str16,
    "notification": mp_notif,
    "response": mp_resp,
    "bad_method": mp_bad,
    "announces_4gib": mp_big,
    "nested": mp_nested,
    "ext": mp_ext,
    "ext8": mp_ext8,
    "back_to_back": mp_req + mp_bin + mp_notif + mp_str16,
}
for k, v in mps.items():
    w("msgpack", k, b"\x08\x00" + v)
    w("connection", "msgpack_" + k, b"\x74\x00" + v)
w("msgpack", "back_to_back_split", b"\x08\x04\x01\x02\x05\x09" + mp_req + mp_bin + mp_notif + mp_str16)
