"""Context budget and stop strings, on the tiny model and in isolation."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.generator import Engine, GenerationOptions, Job
from hush.daemon.engine.stops import StopMatcher
from hush.daemon.engine.testing import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # A short context, so that budgets are exceeded with little text.
    path = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", context_length=512)
    engine = Engine.load(path)
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
