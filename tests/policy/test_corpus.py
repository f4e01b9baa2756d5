"""The labelled corpus: precision and recall per detector, and the same result on any stream."""

from __future__ import annotations

from collections import Counter

import pytest

from hush.daemon.policy.compiled import CompiledPolicy
from hush.daemon.policy.stream import StreamRedactor

from .conftest import CORPUS, Sample

POSITIVES = [s for s in CORPUS if s.spans]
NEGATIVES = [s for s in CORPUS if not s.spans]


def test_corpus_is_large_enough() -> None:
    assert len(POSITIVES) >= 200
    assert len(NEGATIVES) >= 200


def test_precision_and_recall_per_detector(corpus_policy: CompiledPolicy,
                                           record_property: pytest.RecordProperty) -> None:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    misses = []
    for sample in CORPUS:
        found = {(m.detector, m.start, m.end) for m in corpus_policy.detect(sample.text)}
        for hit in found & sample.spans:
            tp[hit[0]] += 1
        for extra in found - sample.spans:
            fp[extra[0]] += 1
            misses.append(f"false positive {extra[0]}: {sample.text!r}")
        for missed in sample.spans - found:
            fn[missed[0]] += 1
            misses.append(f"missed {missed[0]}: {sample.text!r}")
    lines = [f"{'detector':16} {'tp':>4} {'fp':>3} {'fn':>3} {'precision':>9} {'recall':>6}"]
    failing = []
    for det in sorted(set(tp) | set(fp) | set(fn)):
        precision = tp[det] / (tp[det] + fp[det]) if tp[det] + fp[det] else 1.0
        recall = tp[det] / (tp[det] + fn[det]) if tp[det] + fn[det] else 1.0
        lines.append(f"{det:16} {tp[det]:4} {fp[det]:3} {fn[det]:3} {precision:9.3f} {recall:6.3f}")
        record_property(f"{det}_precision", round(precision, 3))
        record_property(f"{det}_recall", round(recall, 3))
        if precision < 0.95 or recall < 0.95:
            failing.append(det)
    print("\n" + "\n".join(lines))
    assert not failing, "\n".join(lines + misses)


@pytest.mark.parametrize("sample", POSITIVES, ids=lambda s: s.text[:40])
def test_stream_catches_every_split(sample: Sample, corpus_policy: CompiledPolicy) -> None:
    text = sample.text
    whole = corpus_policy.apply("output", text)
    for cut in range(1, len(text)):
        redactor = StreamRedactor(corpus_policy, "output")
        out = redactor.push(text[:cut]) + redactor.push(text[cut:]) + redactor.finish()
        assert out == whole.text, f"split at {cut}"
        assert redactor.decision().findings == whole.findings
    redactor = StreamRedactor(corpus_policy, "output")
    out = "".join(redactor.push(c) for c in text) + redactor.finish()
    assert out == whole.text


def test_stream_leaves_negatives_alone(corpus_policy: CompiledPolicy) -> None:
    for sample in NEGATIVES:
        for cut in range(1, len(sample.text)):
            redactor = StreamRedactor(corpus_policy, "output")
            out = (redactor.push(sample.text[:cut]) + redactor.push(sample.text[cut:])
                   + redactor.finish())
            assert out == sample.text, (sample.text, cut)
