"""Engine, streaming and chat templates on the tiny random model (fast)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hush.daemon.engine.chat_template import plain_prompt, render_chat, uses_chat_template
from hush.daemon.engine.convert.testing import build_tiny_model
from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.generator import Engine, GenerationOptions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(build_tiny_model(tmp_path_factory.mktemp("m") / "tiny"), intra_threads=1)


def test_tiny_model_builds_and_loads_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    engine = Engine.load(build_tiny_model(tmp_path / "tiny"), intra_threads=1)
    assert time.monotonic() - started < 1.0
    assert engine.info.end_of_turn_tokens[0] == "<|im_end|>"


def test_prompt_uses_chat_template(tiny: Engine) -> None:
    ids = tiny.prompt_ids([{"role": "user", "content": "hi"}])
    text = tiny.tokenizer.decode(ids, skip_special=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_stream_yields_text_and_usage(tiny: Engine) -> None:
    ids = tiny.prompt_ids([{"role": "user", "content": "hi"}])
    options = GenerationOptions(max_tokens=20, temperature=1.0, top_k=50, seed=3)
    generation = tiny.stream(ids, options)
    pieces = list(generation)
    assert all(isinstance(p, str) and p for p in pieces)
    assert generation.prompt_tokens == len(ids)
    assert generation.finish_reason in ("stop", "length")
    assert 0 < generation.completion_tokens <= 20 or generation.finish_reason == "stop"
    with pytest.raises(RuntimeError):
        iter(generation)


def test_greedy_is_deterministic(tiny: Engine) -> None:
    ids = tiny.prompt_ids([{"role": "user", "content": "hello"}])
    first = "".join(tiny.stream(ids, GenerationOptions(max_tokens=16)))
    assert first == "".join(tiny.stream(ids, GenerationOptions(max_tokens=16)))


def test_cancel_before_start_and_after_one_step(tiny: Engine) -> None:
    ids = tiny.prompt_ids([{"role": "user", "content": "hello"}])
    cancel = threading.Event()
    cancel.set()
    generation = tiny.stream(ids, GenerationOptions(max_tokens=50), cancel)
    assert list(generation) == []
    assert generation.finish_reason == "cancelled"

    # Cancel from the first step on: no further token may be counted.
    cancel = threading.Event()
    generation = tiny.stream(ids, GenerationOptions(max_tokens=200, temperature=1.0), cancel)
    for _ in generation:
        cancel.set()
        seen = generation.completion_tokens
    if generation.finish_reason == "cancelled":
        assert generation.completion_tokens == seen


def test_breaking_out_of_the_loop_marks_cancelled(tiny: Engine) -> None:
    ids = tiny.prompt_ids([{"role": "user", "content": "hello"}])
    generation = tiny.stream(ids, GenerationOptions(max_tokens=200, temperature=1.0, seed=1))
    iterator = iter(generation)
    next(iterator, None)
    iterator.close()  # type: ignore[attr-defined]
    assert generation.finish_reason in ("cancelled", "stop", "length")


def test_stream_decoder_holds_back_partial_characters(tiny: Engine) -> None:
    tok = tiny.tokenizer
    ids = tok.encode("a€👋b")  # 1 + 3 + 4 + 1 bytes, one token each
    assert len(ids) == 9
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in ids]
    assert pieces == ["a", "", "", "€", "", "", "", "👋", "b"]
    assert not decoder.pending
    decoder.push(ids[1])
    assert decoder.pending


def test_prompt_too_long(tiny: Engine) -> None:
    with pytest.raises(ModelError, match="at most"):
        tiny.stream([5] * 600)


def test_options_validation() -> None:
    with pytest.raises(ValueError):
        GenerationOptions(max_tokens=0)
    with pytest.raises(ValueError):
        GenerationOptions(top_p=0)
    assert GenerationOptions().ctranslate2_kwargs()["sampling_topk"] == 1


def test_render_chat_helpers_and_errors() -> None:
    template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
        "{{ strftime_now('%Y') }}"
    )
    out = render_chat(template, [{"role": "user", "content": "x"}], bos_token="<s>", eos_token="")
    assert out.startswith("<s>x\n") and out[-4:].isdigit()
    with pytest.raises(ModelError, match="user first"):
        render_chat(template, [{"role": "system", "content": "x"}], bos_token="", eos_token="")
    with pytest.raises(ModelError, match="syntax error"):
        render_chat("{% for %}", [], bos_token="", eos_token="")


def test_sandbox_blocks_python_internals() -> None:
    with pytest.raises(ModelError):
        render_chat(
            "{{ messages.__class__.__mro__[1].__subclasses__() }}",
            [],
            bos_token="",
            eos_token="",
        )
    with pytest.raises(ModelError):
        render_chat("{{ messages.append(1) }}", [], bos_token="", eos_token="")


def test_completion_mode_without_template() -> None:
    assert not uses_chat_template(None) and not uses_chat_template("  ")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "Once upon a time"},
    ]
    assert plain_prompt(messages) == "Be brief.\n\nOnce upon a time"


def test_requests_without_a_repetition_penalty_get_the_models(tmp_path: Path) -> None:
    from dataclasses import replace

    from hush.daemon.engine.generator import DEFAULT_REPETITION_PENALTY, Job
    from hush.daemon.engine.model_info import ModelInfo

    model = build_tiny_model(tmp_path / "tiny")
    engine = Engine.load(model, intra_threads=1)
    ids = engine.prompt_ids([{"role": "user", "content": "hi"}])
    assert Job(engine, ids, GenerationOptions(), print).options.repetition_penalty == (
        DEFAULT_REPETITION_PENALTY)  # nothing recorded at import: the general default
    chosen = Job(engine, ids, GenerationOptions(repetition_penalty=1.0), print)
    assert chosen.options.repetition_penalty == 1.0
    engine.close()
    replace(ModelInfo.load(model), repetition_penalty=1.3).save(model)
    measured = Engine.load(model, intra_threads=1)
    assert Job(measured, ids, GenerationOptions(), print).options.repetition_penalty == 1.3
    measured.close()
