"""The streamed int8 quantization of vocabulary matrices is CTranslate2's own, bit for bit."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from ctranslate2.specs import common_spec

from hush.daemon.engine.convert import int8_rows
from hush.daemon.engine.convert.int8_rows import quantize, quantize_streamed


def test_rows_quantize_exactly_as_ctranslate2_does() -> None:
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((300, 96)) * rng.uniform(0.01, 3, (300, 1))).astype(np.float32)
    weight[5] = 0  # an all-zero row: CTranslate2 gives it scale 1
    weight[9, 3] = 80.0  # an outlier row
    linear = common_spec.LinearSpec()
    linear.weight = weight.copy()
    linear.validate()
    linear._quantize("int8")
    values, scales = quantize(weight)
    assert np.array_equal(values, linear.weight.numpy())
    assert np.array_equal(scales, linear.weight_scale.numpy())


def test_streaming_in_chunks_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((1000, 32)).astype(np.float32)
    reads = []

    def read(start: int, stop: int) -> npt.NDArray[np.float32]:
        reads.append((start, stop))
        return weight[start:stop]

    monkeypatch.setattr(int8_rows, "CHUNK_ROWS", 256)
    streamed = quantize_streamed(len(weight), read)
    values, scales = quantize(weight)
    assert reads[:2] == [(0, 256), (256, 512)] and reads[-1] == (768, 1000)
    assert np.array_equal(streamed.values, values) and np.array_equal(streamed.scales, scales)
    kept = np.array([999, 0, 17])
    part = streamed.take(kept)
    assert np.array_equal(part.values, quantize(weight[kept])[0])
