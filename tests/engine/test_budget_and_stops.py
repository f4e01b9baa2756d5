"""Context budget, cached prompt prefixes and stop strings, on the tiny model and alone."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hush.daemon.engine import generator
from hush.daemon.engine.convert.testing import build_tiny_model
from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.generator import Engine, GenerationOptions, Job
from hush.daemon.engine.model_info import ModelInfo
from hush.daemon.engine.stops import StopMatcher


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # A short context, so that budgets are exceeded with little text.
    path = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", context_length=512)
    engine = Engine.load(path, intra_threads=1)
    yield engine
    engine.close()


def test_stop_string_split_across_pieces_is_caught_and_cut() -> None:
    matcher = StopMatcher(["\nUser:"])
    out = []
    for piece in ["Sure", ".\n", "Us", "er", ": more"]:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Sure."
    assert stopped


def test_stop_matcher_releases_text_that_cannot_start_a_stop() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.push("abc E") == ("abc ", False)  # "E" might begin "END"
    assert matcher.push("x") == ("Ex", False)
    assert matcher.flush() == ""


def test_history_that_does_not_fit_drops_oldest_turns_after_system(tiny: Engine) -> None:
    context = tiny.info.context_length
    system = {"role": "system", "content": "be brief"}
    filler = "word " * (context // 6)
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"q{i} {filler}"},
                    {"role": "assistant", "content": f"a{i} {filler}"}]
    latest = {"role": "user", "content": "the latest question"}
    prompt = tiny.fit_prompt([system, *history, latest], max_tokens=16)
    assert prompt.dropped_turns > 0 and prompt.dropped_turns % 2 == 0
    assert len(prompt.ids) + 16 <= context
    text = tiny.tokenizer.decode(prompt.ids, skip_special=False)
    assert text.startswith("<|im_start|>system\nbe brief")
    assert "the latest question" in text
    assert "q0 " not in text  # the oldest went first


def test_fitting_history_is_kept_whole(tiny: Engine) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"}]
    assert tiny.fit_prompt(messages, max_tokens=8).dropped_turns == 0


def test_single_message_too_long_says_by_how_much(tiny: Engine) -> None:
    huge = "x " * (tiny.info.context_length * 2)
    with pytest.raises(ModelError, match=r"exceed its context of \d+ by \d+ tokens"):
        tiny.fit_prompt([{"role": "user", "content": huge}], max_tokens=8)


def test_batch_jobs_stop_on_their_own(tiny: Engine) -> None:
    outputs: list[list[str]] = [[], [], []]
    prompts = [tiny.prompt_ids([{"role": "user", "content": t}]) for t in ("a", "bb bb", "c")]
    cancel = threading.Event()
    jobs = [
        Job(tiny, prompts[0], GenerationOptions(max_tokens=3), outputs[0].append),
        Job(tiny, prompts[1], GenerationOptions(max_tokens=40), outputs[1].append),
        Job(tiny, prompts[2], GenerationOptions(max_tokens=40), outputs[2].append, cancel),
    ]
    cancel.set()
    tiny.generate(jobs)
    assert jobs[0].completion_tokens == 3 and jobs[0].finish_reason == "length"
    assert jobs[1].completion_tokens == 40 or jobs[1].finish_reason == "stop"
    assert jobs[2].finish_reason == "cancelled" and outputs[2] == []


def test_batched_greedy_matches_single(tiny: Engine) -> None:
    prompt = tiny.prompt_ids([{"role": "user", "content": "same prompt"}])
    alone = "".join(tiny.stream(prompt, GenerationOptions(max_tokens=20)))
    other = tiny.prompt_ids([{"role": "user", "content": "a different, longer prompt here"}])
    out: list[str] = []
    jobs = [Job(tiny, prompt, GenerationOptions(max_tokens=20), out.append),
            Job(tiny, other, GenerationOptions(max_tokens=20), lambda _t: None)]
    tiny.generate(jobs)
    assert "".join(out) == alone


def test_jobs_with_different_sampling_cannot_share_a_batch(tiny: Engine) -> None:
    prompt = tiny.prompt_ids([{"role": "user", "content": "x"}])
    jobs = [Job(tiny, prompt, GenerationOptions(), lambda _t: None),
            Job(tiny, prompt, GenerationOptions(temperature=0.7), lambda _t: None)]
    with pytest.raises(ValueError, match="share"):
        tiny.generate(jobs)


def _cached_answer(engine: Engine, prompt_ids: list[int], static: int) -> str:
    out: list[str] = []
    engine.generate([Job(engine, prompt_ids, GenerationOptions(max_tokens=12), out.append,
                         static=static)])
    return "".join(out)


def test_system_prompt_prefix_is_cached_and_answers_alike(tiny: Engine) -> None:
    system = {"role": "system", "content": "You answer in one short sentence, politely."}
    prompt = tiny.fit_prompt([system, {"role": "user", "content": "Where is Oslo?"}], 16)
    prefix = tiny.tokenizer.decode(prompt.ids[: prompt.static], skip_special=False)
    # The system turn and the template's own text up to where the user's words begin.
    assert prefix == ("<|im_start|>system\nYou answer in one short sentence, politely."
                      "<|im_end|>\n<|im_start|>user\n")
    other = tiny.fit_prompt([system, {"role": "user", "content": "1 + 1?"}], 16)
    assert other.ids[: other.static] == prompt.ids[: prompt.static]
    uncached = _cached_answer(tiny, prompt.ids, 0)
    assert uncached == _cached_answer(tiny, prompt.ids, prompt.static)  # fills the cache
    assert uncached == _cached_answer(tiny, prompt.ids, prompt.static)  # from the cache


def test_completion_mode_caches_the_system_text(tmp_path: Path) -> None:
    # A base model without a chat template (Gemma 3 270M): the system text, then the question.
    path = build_tiny_model(tmp_path / "base")
    info = ModelInfo.load(path)
    dataclasses.replace(info, chat_template=None).save(path)
    engine = Engine.load(path, intra_threads=1)
    try:
        system = {"role": "system", "content": "Facts about the sea, written for children."}
        prompt = engine.fit_prompt([system, {"role": "user", "content": "Waves are"}], 16)
        assert engine.tokenizer.decode(prompt.ids[: prompt.static]).startswith(
            "Facts about the sea, written for children.")
        assert prompt.static < len(prompt.ids)
        assert _cached_answer(engine, prompt.ids, 0) == _cached_answer(engine, prompt.ids,
                                                                     prompt.static)
    finally:
        engine.close()


def test_short_or_unshared_prefixes_are_not_cached(tiny: Engine) -> None:
    # Without a system prompt this template shares only "<|im_start|>user\n": too little.
    assert tiny.fit_prompt([{"role": "user", "content": "hi"}], 8).static == 0


def test_cached_prefixes_stay_within_their_token_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CTranslate2 never evicts a cached prompt state, so the engine stops handing it new ones.
    monkeypatch.setattr(generator, "STATIC_CACHE_TOKENS", 100)
    engine = Engine.load(build_tiny_model(tmp_path / "tiny"), intra_threads=1)
    try:
        def static_for(system: str) -> int:
            return engine.fit_prompt([{"role": "system", "content": system},
                                      {"role": "user", "content": "hi"}], 8).static

        first = static_for("a" * 40)
        assert 40 < first < 100
        assert static_for("b" * 40) == 0  # would pass the budget: computed, not cached
        assert static_for("a" * 40) == first  # the cached one still is
    finally:
        engine.close()
