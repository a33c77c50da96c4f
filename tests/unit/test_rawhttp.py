"""The raw HTTP client's reply parser: lengths, chunks, partial buffers, connection close."""

from __future__ import annotations

import pytest

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.rawhttp import RawHttpClient, _decode, _parse


def test_content_length_reply_is_parsed_and_consumed() -> None:
    buf = bytearray(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 7\r\n\r\n{\"a\":1}HTTP/1.1")
    status, ctype, body, close = _parse(buf) or (0, b"", b"", True)
    assert (status, body, close) == (201, b'{"a":1}', False)
    assert _decode(ctype, body) == {"a": 1}
    assert bytes(buf) == b"HTTP/1.1"  # the next reply's start stays buffered


def test_partial_and_chunked_replies() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    buf = bytearray(head + b"3\r\nabc\r\n")
    assert _parse(buf) is None  # not complete yet: nothing consumed
    buf += b"2\r\nde\r\n0\r\n\r\n"
    assert _parse(buf) == (200, b"", b"abcde", True)
    assert not buf
    assert _parse(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")) is None


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValidationError, match="url"):
        RawHttpClient("https://127.0.0.1:1")
