"""End to end with the real SmolLM2-135M GGUF: import, chat, stream, cancel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine import catalog
from hush.daemon.engine.convert.gguf_import import import_gguf
from hush.daemon.engine.convert.pull import fetch_gguf, pull
from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.model_info import IMPORT_REVISION, ModelInfo
from hush.daemon.engine.quiz import ask_all, load_questions

from ..quiz import PASS_MARK, easy_questions

DOWNLOADS = paths.CacheLayout.default().downloads


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("models") / "smollm2-135m"
    import_gguf(smollm2_gguf, dest, quantization="int8")
    return dest


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path) -> Engine:
    return Engine.load(smollm2_dir, intra_threads=1)


def test_import_writes_complete_directory(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"model.bin", "config.json", "tokenizer.json", "hush-model.json"} <= names
    # Nothing left over next to it.
    assert [p.name for p in smollm2_dir.parent.iterdir()] == [smollm2_dir.name]
    info = ModelInfo.load(smollm2_dir)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.quantization == "int8"
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert info.source_sha256 == catalog.CATALOG["smollm2-135m"].sha256
    assert info.eos_token == "<|im_end|>"
    assert "<|im_end|>" in info.end_of_turn_tokens
    assert info.add_bos is False
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.path == smollm2_dir
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["layer_norm_epsilon"] == pytest.approx(1e-5)


def test_import_holds_at_most_the_model_plus_1_gib(smollm2_gguf: Path, tmp_path: Path) -> None:
    # Layer by layer, with the vocabulary matrices quantized as they are read: a 135 MB int8
    # model peaked at 1,285 MB when the whole model was staged in float32 (Qwen2.5-Coder-1.5B:
    # 13.6 GB, now 2.6 GB).
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from hush.daemon.engine.convert.gguf_import import import_gguf
        import_gguf(Path(sys.argv[1]), Path(sys.argv[2]))
        # VmHWM, not ru_maxrss: Linux carries that over exec from the forking (pytest) process.
        status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
        print(int(status.split()[0]) * 1024)
    """)
    dest = tmp_path / "smollm2"
    done = subprocess.run([sys.executable, "-c", code, str(smollm2_gguf), str(dest)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1])
    assert peak <= (dest / "model.bin").stat().st_size + (1 << 30), f"{peak / 2**20:.0f} MiB"


def test_import_refuses_existing_destination(smollm2_gguf: Path, smollm2_dir: Path) -> None:
    with pytest.raises(ModelError, match="already exists"):
        import_gguf(smollm2_gguf, smollm2_dir)


def test_pull_imports_again_what_an_older_importer_made(
        smollm2_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    old = models / "smollm2-135m"
    shutil.copytree(smollm2_dir, old)
    info_file = old / "hush-model.json"
    data = json.loads(info_file.read_text())
    del data["import_revision"]  # what importers before revisions wrote
    info_file.write_text(json.dumps(data))
    (old / "model.bin").write_bytes(b"an older import")
    messages: list[str] = []
    downloads = Path(fetch_gguf("smollm2-135m", DOWNLOADS)).parent
    info = pull("smollm2-135m", models, downloads, messages.append)
    assert info.import_revision == IMPORT_REVISION
    assert any("older version of Hush" in m for m in messages), messages
    assert (old / "model.bin").read_bytes() == (smollm2_dir / "model.bin").read_bytes()
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m"]  # no staging left
    # At the current revision the install is reused as it is.
    stamp = (old / "model.bin").stat().st_mtime_ns
    messages.clear()
    pull("smollm2-135m", models, downloads, messages.append)
    assert (old / "model.bin").stat().st_mtime_ns == stamp and not messages


def test_tokenizer_matches_reference_ids(engine: Engine) -> None:
    # Ids from SmolLM2's own tokenizer.json for the ChatML turn header.
    assert engine.tokenizer.encode("<|im_start|>assistant\n") == [1, 520, 9531, 198]
    # smollm pre-tokenizer: digits one at a time.
    digits = engine.tokenizer.encode("2024")
    assert [engine.tokenizer.id_to_token(i) for i in digits] == ["2", "0", "2", "4"]
    assert engine.tokenizer.decode(engine.tokenizer.encode("héllo wörld 👋")) == "héllo wörld 👋"


@pytest.mark.parametrize("system", ["You are a helpful assistant.", None])
def test_greedy_answers_the_easy_questions(engine: Engine, system: str | None) -> None:
    # None: the template's own default system prompt. Without SmoothQuant-style smoothing at
    # import, int8 answered "What is the capital of France?" there with "L'Étoile, la
    # Marseillaise, ..." (activation quantization error).
    answers = ask_all(engine, easy_questions(), GenerationOptions(max_tokens=32), system=system)
    assert sum(a.right for a in answers) >= PASS_MARK, [a.text for a in answers]
    # Short answers end on the end-of-turn token, not on the token budget.
    assert sum(a.finish_reason == "stop" for a in answers) >= PASS_MARK


def test_default_repetition_penalty_stops_greedy_loops(engine: Engine) -> None:
    prompts = load_questions(Path(__file__).parent / "data" / "looping_prompts.json")
    off = ask_all(engine, prompts, GenerationOptions(max_tokens=160, repetition_penalty=1.0))
    default = ask_all(engine, prompts, GenerationOptions(max_tokens=160))
    assert engine.repetition_penalty > 1.0
    looping = sum(a.loops for a in default)
    assert looping <= 2, [a.text for a in default if a.loops]
    assert sum(a.loops for a in off) > looping


def test_generation_reports_its_counts(engine: Engine) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    generation = engine.stream(engine.prompt_ids(messages), GenerationOptions(max_tokens=8))
    assert "".join(generation)
    assert 0 < generation.completion_tokens <= 8
    assert generation.prompt_tokens == len(engine.prompt_ids(messages))
    assert generation.first_token_time is not None


def test_max_tokens_gives_length(engine: Engine) -> None:
    ids = engine.prompt_ids([{"role": "user", "content": "Write a long story about a dragon."}])
    generation = engine.stream(ids, GenerationOptions(max_tokens=5))
    list(generation)
    assert generation.completion_tokens == 5
    assert generation.finish_reason == "length"


def test_streamed_emoji_arrive_whole(engine: Engine) -> None:
    # Every 4-byte emoji is several byte-level tokens; pieces must still be valid text.
    tok = engine.tokenizer
    ids = tok.encode("Party 🎉🐉 time")
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == "Party 🎉🐉 time"
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # some tokens only carried part of a character


def test_cancel_stops_within_one_step(engine: Engine) -> None:
    ids = engine.prompt_ids([{"role": "user", "content": "Write a long story about a dragon."}])
    cancel = threading.Event()
    generation = engine.stream(ids, GenerationOptions(max_tokens=400), cancel)
    iterator = iter(generation)
    next(iterator)
    tokens_at_cancel = generation.completion_tokens
    cancel.set()
    started = time.monotonic()
    rest = list(iterator)
    assert time.monotonic() - started < 1.0
    assert rest == []
    assert generation.completion_tokens == tokens_at_cancel
    assert generation.finish_reason == "cancelled"


def test_cancel_from_another_thread(engine: Engine) -> None:
    ids = engine.prompt_ids([{"role": "user", "content": "Write a long story about a dragon."}])
    cancel = threading.Event()
    generation = engine.stream(ids, GenerationOptions(max_tokens=400), cancel)
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        list(generation)
    finally:
        timer.cancel()
    assert generation.finish_reason == "cancelled"
    assert generation.completion_tokens < 400


def test_cached_system_prompt_answers_as_well_as_the_whole_prompt(engine: Engine) -> None:
    # Cached, the prompt is two forwards (prefix, then the rest) instead of one: a different
    # rounding, which can flip a borderline greedy token but must not cost answers.
    system = "You are a careful assistant for a small clinic. Answer briefly. " * 6
    prompt = engine.fit_prompt([{"role": "system", "content": system},
                                {"role": "user", "content": "What is the capital of France?"}],
                               max_tokens=32)
    assert 0 < prompt.static < len(prompt.ids)  # the system prompt is a cacheable prefix
    options = GenerationOptions(max_tokens=32)
    whole = ask_all(engine, easy_questions(), options, system=system, cache_prefix=False)
    cached = ask_all(engine, easy_questions(), options, system=system)  # writes, then reads
    again = ask_all(engine, easy_questions(), options, system=system)  # reads only
    assert [a.text for a in again] == [a.text for a in cached]
    for answers in (whole, cached):
        assert sum(a.right for a in answers) >= PASS_MARK, [a.text for a in answers]


def test_import_records_how_often_int8_follows_float32(smollm2_dir: Path, engine: Engine
                                                       ) -> None:
    from hush.daemon.engine.convert import agreement

    fraction = agreement.measure(smollm2_dir, engine.generator)
    # 0.93 on the Intel Xeon (below the 0.97 bar, docs/benchmarks.md); broken kernels or a
    # wrong weight mapping agree on almost nothing.
    assert fraction is not None and 0.85 <= fraction <= 1.0
    assert agreement.recorded(smollm2_dir) == round(fraction, 4)


def test_an_import_below_the_agreement_bar_stands_with_a_warning_naming_the_figure(
        smollm2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from hush.daemon.engine.convert import agreement
    from hush.tui.cli import _check_agreement

    model = tmp_path / "model"
    shutil.copytree(smollm2_dir, model)
    data = json.loads((model / agreement.AGREEMENT_FILE).read_text())
    agreement.write_reference(model, data["ids"], [0] * len(data["ids"]))  # a model far off
    _check_agreement("smollm2-135m", model, 1)
    err = capsys.readouterr().err
    assert "warning: smollm2-135m agrees with the float32 model" in err and "0.0%" in err
    assert agreement.recorded(model) == 0.0
    assert ModelInfo.load(model).quantization == "int8"  # still a model, still usable
