"""The wire format: frame splitting, decoding and request validation, without a daemon."""

from __future__ import annotations

import json

import pytest

from hush.daemon.protocol import (
    ChatParams,
    FrameReader,
    ProtocolError,
    decode,
    encode,
    parse_request,
)


def test_frames_split_on_newlines_across_reads() -> None:
    reader = FrameReader(1024)
    assert reader.feed(b'{"a":') == []
    assert reader.feed(b'1}\n{"b":2}\n\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert reader.feed(b":3}\n") == [b'{"c":3}']


def test_oversized_frame_is_reported_once_and_skipped() -> None:
    reader = FrameReader(100)
    out = reader.feed(b"x" * 150)
    assert len(out) == 1 and isinstance(out[0], ProtocolError)
    assert out[0].code == "frame_too_large"
    assert reader.feed(b"y" * 500) == []  # still the same frame
    assert reader.feed(b'tail\n{"ok":1}\n') == [b'{"ok":1}']


def test_decode_rejects_what_is_not_a_json_object() -> None:
    for line, code in [
        (b"\xff\xfe", "bad_frame"),
        (b"not json", "bad_frame"),
        (b"[1,2]", "bad_frame"),
        (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
    ]:
        with pytest.raises(ProtocolError) as info:
            decode(line, max_depth=32)
        assert info.value.code == code, line[:20]


def test_encode_is_one_line_of_utf8() -> None:
    frame = encode({"type": "token", "id": "1", "text": "é\nà"})
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert json.loads(frame)["text"] == "é\nà"


def test_request_errors_name_the_field() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "1", "method": "chat", "params": {"message": 5}})
    assert "params.message" in info.value.message
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "1", "method": "chat",
                       "params": {"message": "hi", "options": {"max_tokens": "9"}}})
    assert "params.options.max_tokens" in info.value.message
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "1", "method": "chat", "params": {"message": "hi", "color": 1}})
    assert "params.color" in info.value.message and "Extra inputs" in info.value.message
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "1", "method": "launch", "params": {}})
    assert info.value.code == "unknown_method" and "chat" in info.value.message
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": 7, "method": "status"})
    assert info.value.message.startswith("id:")


def test_valid_chat_request_parses_with_defaults() -> None:
    request, params = parse_request(
        {"id": "a", "method": "chat", "params": {"message": "hi", "options": {"max_tokens": 9}}}
    )
    assert request.id == "a"
    assert isinstance(params, ChatParams)
    assert params.options.max_tokens == 9 and params.options.temperature == 0.0


def test_an_integer_too_long_for_64_bits_is_a_bad_request_wherever_it_is() -> None:
    for line in [b'{"x":' + b"9" * 5000 + b"}", b'{"a":[1,{"b":-' + b"1" * 21 + b"}]}"]:
        with pytest.raises(ProtocolError) as info:
            decode(line)
        assert info.value.code == "bad_request" and "at most 20" in info.value.message
    assert decode(b'{"seed":18446744073709551615}') == {"seed": 2**64 - 1}


@pytest.mark.parametrize(("options", "field"), [
    ({"seed": 2**64}, "params.options.seed"),
    ({"seed": -1}, "params.options.seed"),
    ({"top_k": 2**31}, "params.options.top_k"),
    ({"temperature": float("nan")}, "params.options.temperature"),
    ({"repetition_penalty": float("inf")}, "params.options.repetition_penalty"),
])
def test_sampling_numbers_the_engine_cannot_take_are_refused(options: dict[str, object],
                                                            field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "1", "method": "chat",
                       "params": {"message": "hi", "options": options}})
    assert info.value.code == "bad_request" and info.value.message.startswith(field)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "\x1b[2J", "a\u2028b", "\x00"])
def test_request_ids_are_printable(bad: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": bad, "method": "status"})
    assert info.value.code == "bad_request" and "printable" in info.value.message
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": "ok", "method": "cancel", "params": {"request_id": bad}})
    assert info.value.message.startswith("params.request_id")
    request, _ = parse_request({"id": "r1 é/ü:2", "method": "status"})
    assert request.id == "r1 é/ü:2"
