"""An orthogonal rotation of the residual stream, so that CTranslate2's int8 loses less.

CTranslate2 quantizes every activation row (one token) and every weight row with one scale.
A few residual channels of small Llama-family models carry values tens of times larger than
the rest, so they set both scales and everything else is rounded to a handful of levels.
Rotating the residual stream by a random orthogonal matrix Q (QuaRot, Ashkboos et al. 2024;
QuIP's incoherence, Chee et al. 2023) spreads each outlier over all channels: the function
is unchanged in exact arithmetic, and the maxima that set the scales shrink.

It is exact because RMSNorm commutes with an orthogonal matrix once its per-channel weight
is moved into the layers that read it: rms(x Q) = rms(x). So, per decoder layer:

- the attention and feed-forward norm weights are folded into the Q/K/V and gate/up
  columns, and set to 1;
- those readers take the rotated stream: W <- W Q;
- the writers into the stream, the attention output and down projections: W <- Q^T W;
- outside the layers, the embedding rows are rotated (E <- E Q) and the final norm weight is
  folded into the LM head (H <- diag(g) H Q). With tied embeddings the two then differ, so
  the model gets a separate LM head.

Only the residual stream is rotated; the inputs of the output and down projections stay as
they are, and SmoothQuant (smoothing.py) still rescales those. The builder (architectures.py)
applies it while it fills the spec, before each layer is quantized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32Array = npt.NDArray[np.float32]

SEED = 20261203
# On by default where it was measured to help (docs/benchmarks.md, int8 against float32 on
# held-out text, mean KL): SmolLM2-135M (llama) 0.0188 -> 0.0127, three seeds within 5%.
# Qwen2.5-Coder-0.5B (qwen2) 0.0112 -> 0.0111: its int8 loss is in the vocabulary matrices,
# one scale per row, which no rotation of the stream changes; rotating would only add a
# separate 136-233 MB LM head. Gemma's norms after each block sit between a writer and the
# stream, where no rotation folds.
ROTATED_ARCHITECTURES = ("llama",)
# The linear inputs SmoothQuant still rescales once the stream is rotated.
UNROTATED_SITES = ("o_in", "down_in")


def random_orthogonal(size: int, seed: int = SEED) -> F32Array:
    """A fixed random orthogonal matrix (Haar measure: QR of a Gaussian, signs corrected)."""
    gaussian = np.random.default_rng(seed).standard_normal((size, size))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))
    return q.astype(np.float32)


@dataclass(frozen=True)
class Rotation:
    q: F32Array

    @classmethod
    def of_size(cls, hidden: int) -> Rotation:
        return cls(random_orthogonal(hidden))

    def embedding_rows(self, rows: F32Array) -> F32Array:
        return rows @ self.q

    def head_rows(self, rows: F32Array, final_norm: F32Array) -> F32Array:
        rotated: F32Array = ((rows * final_norm) @ self.q).astype(np.float32, copy=False)
        return rotated

    def layer(self, layer: Any) -> None:
        """Rotate one llama-like decoder layer spec in place (before quantization)."""
        attn, ffn = layer.self_attention, layer.ffn
        qkv, out = attn.linear[0], attn.linear[1]
        gate, up, down = ffn.linear_0, ffn.linear_0_noact, ffn.linear_1
        attn_gamma = _take_gamma(attn.layer_norm)
        ffn_gamma = _take_gamma(ffn.layer_norm)
        qkv.weight = (qkv.weight * attn_gamma) @ self.q
        gate.weight = (gate.weight * ffn_gamma) @ self.q
        up.weight = (up.weight * ffn_gamma) @ self.q
        out.weight = self.q.T @ out.weight
        down.weight = self.q.T @ down.weight
        for writer in (out, down):
            bias = getattr(writer, "bias", None)
            if bias is not None and not isinstance(bias, str):
                writer.bias = np.asarray(bias, dtype=np.float32) @ self.q


def _take_gamma(norm: Any) -> F32Array:
    gamma = np.asarray(norm.gamma, dtype=np.float32)
    norm.gamma = np.ones_like(gamma)
    return gamma
