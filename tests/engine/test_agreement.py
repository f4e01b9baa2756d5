"""Imported CTranslate2 models against an independent numpy forward pass of the same GGUF.

Teacher forced: at every position of real English text both models predict the next token;
agreement is the share of positions where their top-1 tokens match. Float32 imports must
match the reference almost everywhere (they only differ by float rounding); int8 imports lose
some agreement to weight and activation quantization, which the SmoothQuant step recovers in
part. Figures are printed (pytest -s) and recorded as test properties (--junitxml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hush.daemon import paths
from hush.daemon.engine.convert.gguf_import import import_gguf
from hush.daemon.engine.convert.pull import fetch_gguf
from hush.daemon.engine.convert.reference import ReferenceModel
from hush.daemon.engine.convert.smoothing import SMOOTHED_QUANTIZATIONS
from hush.daemon.engine.errors import UnsupportedModelError
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.quiz import ask_all

from ..quiz import PASS_MARK, easy_questions

F64 = npt.NDArray[np.float64]
PASSAGES_FILE = Path(__file__).parent / "data" / "agreement_passages.txt"
FLOAT32_THRESHOLD = 0.98
INT8_THRESHOLD = 0.80
Record = Callable[[str, object], None]


def _passages() -> list[str]:
    lines = PASSAGES_FILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(ln for ln in lines if not ln.startswith("#"))
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _log_softmax(logits: npt.NDArray[np.floating]) -> F64:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    out: F64 = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


@dataclass(frozen=True)
class Agreement:
    matches: int
    positions: int
    kl: float  # mean KL(reference || imported) per position, in nats

    @property
    def fraction(self) -> float:
        return self.matches / self.positions

    def __str__(self) -> str:
        return f"{self.fraction:.3f} ({self.matches}/{self.positions}), KL {self.kl:.4f}"


class Reference:
    """Reference log-probabilities for the passages, computed once per model."""

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self._cache: dict[tuple[int, ...], F64] = {}
        self._model: ReferenceModel | None = None

    def log_probs(self, ids: list[int]) -> F64:
        key = tuple(ids)
        if key not in self._cache:
            if self._model is None:
                self._model = ReferenceModel.from_gguf(self.gguf)
            self._cache[key] = _log_softmax(self._model.logits(ids))
        return self._cache[key]


def passage_ids(engine: Engine) -> list[list[int]]:
    sequences = []
    for passage in _passages():
        ids = engine.tokenizer.encode(passage)
        if engine.info.add_bos and engine.bos_id is not None:
            ids.insert(0, engine.bos_id)
        sequences.append(ids)
    return sequences


def agreement(engine: Engine, reference: Reference) -> Agreement:
    matches = positions = 0
    kl_total = 0.0
    for ids in passage_ids(engine):
        ours = _log_softmax(np.array(engine.generator.forward_batch([ids]))[0])
        theirs = reference.log_probs(ids)
        assert ours.shape == theirs.shape
        matches += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        positions += len(ids)
        kl_total += float((np.exp(theirs) * (theirs - ours)).sum())
    return Agreement(matches, positions, kl_total / positions)


def report(record: Record, label: str, result: Agreement) -> None:
    print(f"\n{label}: agreement {result}")
    record(f"{label} agreement", round(result.fraction, 4))
    record(f"{label} KL", round(result.kl, 5))


class Imports:
    """Imports of one GGUF in several variants, made once and shared by the tests."""

    def __init__(self, gguf: Path, root: Path) -> None:
        self.gguf, self.root = gguf, root
        self.reference = Reference(gguf)
        self._engines: dict[tuple[str, bool, bool | None], Engine] = {}

    def engine(self, quantization: str, smooth: bool | None = None,
               rotate: bool | None = None) -> Engine:
        """`rotate` None is the importer's own choice for the architecture."""
        if smooth is None:  # the importer's default, spelled out so imports are shared
            smooth = quantization in SMOOTHED_QUANTIZATIONS
        key = (quantization, smooth, rotate)
        if key not in self._engines:
            dest = self.root / f"{quantization}-{smooth}-{rotate}"
            import_gguf(self.gguf, dest, quantization=quantization, smooth=smooth,
                        rotate=rotate)
            self._engines[key] = Engine.load(dest, intra_threads=1)
        return self._engines[key]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Imports:
    return Imports(smollm2_gguf, tmp_path_factory.mktemp("agreement-smollm2"))


def test_smollm2_float32_matches_reference(smollm2: Imports, record_property: Record) -> None:
    result = agreement(smollm2.engine("float32"), smollm2.reference)
    report(record_property, "smollm2 float32", result)
    assert result.positions >= 64
    assert result.fraction >= FLOAT32_THRESHOLD
    assert result.kl < 1e-3


def test_smollm2_int8_agrees_with_reference(smollm2: Imports, record_property: Record) -> None:
    # The default int8 import, SmoothQuant included.
    result = agreement(smollm2.engine("int8"), smollm2.reference)
    report(record_property, "smollm2 int8", result)
    assert result.fraction >= INT8_THRESHOLD


@pytest.mark.models  # one more import: ~8 s, kept out of the default suite
def test_smoothing_computes_the_same_function(smollm2: Imports) -> None:
    # In float32 nothing is quantized, so the rescaled model must give the same logits.
    plain, smoothed = smollm2.engine("float32"), smollm2.engine("float32", smooth=True)
    ids = passage_ids(plain)[0]
    a = np.array(plain.generator.forward_batch([ids]))[0]
    b = np.array(smoothed.generator.forward_batch([ids]))[0]
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= FLOAT32_THRESHOLD


def test_rotation_computes_the_same_function(smollm2: Imports) -> None:
    # Exact arithmetic gives the same model; float32 only reorders the sums.
    plain, rotated = smollm2.engine("float32"), smollm2.engine("float32", rotate=True)
    for ids in passage_ids(plain):
        a = np.array(plain.generator.forward_batch([ids]))[0]
        b = np.array(rotated.generator.forward_batch([ids]))[0]
        assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= FLOAT32_THRESHOLD


def test_rotation_brings_smollm2_int8_closer(smollm2: Imports, record_property: Record) -> None:
    # Measured on bench/data/agreement_text.txt 0.0188 -> 0.0127 nats (three rotation seeds
    # within 5%), here 0.0170 -> 0.0130: a margin no rounding noise closes. Top-1 moves by a
    # few near-tied positions either way, so KL is what is held. The default import of a
    # llama model is the rotated one.
    unrotated = agreement(smollm2.engine("int8", rotate=False), smollm2.reference)
    report(record_property, "smollm2 int8 unrotated", unrotated)
    rotated = agreement(smollm2.engine("int8"), smollm2.reference)
    report(record_property, "smollm2 int8 rotated", rotated)
    assert rotated.kl < 0.85 * unrotated.kl


def test_rotation_is_refused_where_it_does_not_fold(tmp_path: Path) -> None:
    gguf = fetch_gguf("gemma3-270m", paths.CacheLayout.default().downloads)
    with pytest.raises(UnsupportedModelError, match=r"residual rotation.*gemma3"):
        import_gguf(gguf, tmp_path / "gemma", rotate=True)
    assert not (tmp_path / "gemma").exists()


def test_smoothed_int8_answers_with_the_default_system_prompt(smollm2: Imports) -> None:
    # SmolLM2's template adds "You are a helpful AI assistant named SmolLM, trained by Hugging
    # Face" when no system message is given; unsmoothed int8 answered that with nonsense.
    answers = ask_all(smollm2.engine("int8"), easy_questions(), GenerationOptions(max_tokens=32),
                      system=None)
    assert sum(a.right for a in answers) >= PASS_MARK, [a.text for a in answers]


MODELS = ("qwen2.5-coder-0.5b", "gemma3-270m")


@pytest.fixture(scope="module", params=MODELS)
def catalog_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Imports]:
    name = str(request.param)
    gguf = fetch_gguf(name, paths.CacheLayout.default().downloads)
    yield Imports(gguf, tmp_path_factory.mktemp(f"agreement-{name}"))


@pytest.mark.models
def test_catalog_model_agreement(catalog_model: Imports, record_property: Record) -> None:
    name = catalog_model.gguf.stem
    exact = agreement(catalog_model.engine("float32"), catalog_model.reference)
    report(record_property, f"{name} float32", exact)
    quantized = agreement(catalog_model.engine("int8"), catalog_model.reference)
    report(record_property, f"{name} int8", quantized)
    assert exact.fraction >= FLOAT32_THRESHOLD
    assert quantized.fraction >= INT8_THRESHOLD


def smoothing_gain(imports: Imports, record: Record) -> None:
    name = imports.gguf.stem
    plain = agreement(imports.engine("int8", smooth=False), imports.reference)
    report(record, f"{name} int8 unsmoothed", plain)
    smoothed = agreement(imports.engine("int8", smooth=True), imports.reference)
    report(record, f"{name} int8 smoothed", smoothed)
    # KL is the steadier measure over a few hundred positions; agreement moves in steps.
    assert smoothed.kl < plain.kl


@pytest.mark.models
def test_smoothing_brings_smollm2_int8_closer(smollm2: Imports, record_property: Record) -> None:
    smoothing_gain(smollm2, record_property)


@pytest.mark.models
def test_smoothing_brings_catalog_int8_closer(
    catalog_model: Imports, record_property: Record
) -> None:
    smoothing_gain(catalog_model, record_property)
