"""Splitting Server-Sent Events incrementally, each event with its exact bytes."""

from __future__ import annotations

import pytest

from gateway.upstream.sse import SseSplitter, json_object, parse_event

STREAM = (
    b'data: {"a": 1}\n\n'
    b'event: response.output_text.delta\ndata: {"delta": "hi"}\n\n'
    b": keep-alive\n\n"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)


def split_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SseSplitter()
    raws = [event.raw for chunk in chunks for event in splitter.feed(chunk)]
    return raws, splitter.rest()


def test_events_keep_their_exact_bytes_and_meaning() -> None:
    splitter = SseSplitter()
    events = splitter.feed(STREAM)
    assert b"".join(e.raw for e in events) == STREAM
    assert [(e.name, e.data) for e in events] == [
        (None, '{"a": 1}'),
        ("response.output_text.delta", '{"delta": "hi"}'),
        (None, None),
        (None, "line one\nline two"),
        (None, "[DONE]"),
    ]
    assert splitter.rest() == b""


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 1000])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    raws, rest = split_all(chunks)
    assert raws == split_all([STREAM])[0]
    assert rest == b""


def test_an_unfinished_event_waits_and_is_left_at_the_end() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert [e.data for e in splitter.feed(b": 1}\n\ndata: tail")] == ['{"a": 1}']
    assert splitter.rest() == b"data: tail"


def test_crlf_line_endings() -> None:
    events = SseSplitter().feed(b"event: x\r\ndata: {}\r\n\r\ndata: 2\r\n\r\n")
    assert [(e.name, e.data) for e in events] == [("x", "{}"), (None, "2")]
    assert b"".join(e.raw for e in events) == b"event: x\r\ndata: {}\r\n\r\ndata: 2\r\n\r\n"


def test_a_line_separator_inside_json_stays_in_the_data() -> None:
    raw = 'data: {"t": "a\u2028b"}\n\n'.encode()
    assert parse_event(raw).data == '{"t": "a\u2028b"}'


def test_field_without_space_and_unknown_fields() -> None:
    event = parse_event(b"data:x\nid: 7\nretry: 10\n\n")
    assert (event.name, event.data) == (None, "x")


def test_event_data_is_read_as_a_json_object_or_not_at_all() -> None:
    assert json_object('{"choices": []}') == {"choices": []}
    assert json_object(b'{"usage": {"prompt_tokens": 3}}') == {"usage": {"prompt_tokens": 3}}
    assert json_object("[DONE]") is None
    assert json_object("[1, 2]") is None
    assert json_object(b"\xff{") is None
