"""Per-row int8 quantization of the vocabulary matrices, straight from the GGUF, in chunks.

The embedding table (and an untied LM head) is the largest tensor of a small model: Qwen2.5's
151,936 x 1,536 is 0.93 GB as float32, and CTranslate2's own quantization makes two more
copies of it on the way to int8. Its int8 format is per row (one scale per output row), so
rows can be dequantized and quantized a few thousand at a time with exactly the same result:
`quantize` repeats ctranslate2.specs' formula, and a test holds it to CTranslate2's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32Array = npt.NDArray[np.float32]
I8Array = npt.NDArray[np.int8]

CHUNK_ROWS = 4096


@dataclass(frozen=True)
class QuantizedRows:
    """A [rows, columns] weight already in CTranslate2's int8 format."""

    values: I8Array
    scales: F32Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def take(self, rows: npt.NDArray[np.intp]) -> QuantizedRows:
        """Only `rows`: per-row scales make this the quantization of those rows alone."""
        return QuantizedRows(np.ascontiguousarray(self.values[rows]),
                             np.ascontiguousarray(self.scales[rows]))


def quantize(rows: F32Array) -> tuple[I8Array, F32Array]:
    """CTranslate2's int8 weight quantization of `rows` (ctranslate2/specs/model_spec.py)."""
    amax = np.amax(np.absolute(rows), axis=1)
    amax[amax == 0] = 127.0
    amax = np.maximum(amax, np.float32(127) / np.finfo(np.float32).max)
    scale = (127.0 / amax).astype(np.float32)
    values = np.rint(rows * np.expand_dims(scale, 1)).astype(np.int8)
    return values, scale


def quantize_streamed(n_rows: int, read: Callable[[int, int], F32Array]) -> QuantizedRows:
    """Quantize a matrix whose rows `read(start, stop)` dequantizes, CHUNK_ROWS at a time."""
    values: I8Array | None = None
    scales = np.empty(n_rows, dtype=np.float32)
    for start in range(0, n_rows, CHUNK_ROWS):
        stop = min(n_rows, start + CHUNK_ROWS)
        chunk, chunk_scales = quantize(read(start, stop))
        if values is None:
            values = np.empty((n_rows, chunk.shape[1]), dtype=np.int8)
        values[start:stop] = chunk
        scales[start:stop] = chunk_scales
    assert values is not None, "a matrix with no rows"
    return QuantizedRows(values, scales)
