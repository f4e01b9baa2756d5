"""A plain-numpy forward pass computed straight from a GGUF file: the yardstick for imports.

It is written from the model definitions (and llama.cpp's conventions for how GGUF stores
them), deliberately without sharing code with `gguf_import`, so that agreement between the two
means something: a bug in the importer's weight mapping cannot be mirrored here.

Conventions taken from llama.cpp rather than from the importer:
- llama: Q/K rows are stored permuted for *interleaved* rotary (pairs 2i, 2i+1). Instead of
  undoing the permutation (as the importer does), this module applies interleaved rotary to
  the weights as stored, which is what llama.cpp itself computes.
- qwen2 and gemma3 use the half-split ("neox") rotary layout and are stored unpermuted.
- gemma3 RMSNorm weights are stored as (1 + w), so they are used as stored.

Everything runs in float32 (attention softmax included); it is slow but only needs to handle
a few hundred tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32Array = npt.NDArray[np.float32]

# capture(site, layer, activations[T, features]) sees the input of each linear layer:
#   "attn_in"  normed input of Q/K/V      "o_in"   input of the attention output projection
#   "ffn_in"   normed input of gate/up    "down_in" input of the down projection
Capture = Callable[[str, int, F32Array], None]
SITES = ("attn_in", "o_in", "ffn_in", "down_in")

REFERENCE_ARCHITECTURES = ("llama", "qwen2", "gemma3")

# Gemma 3 alternates five sliding-window layers with one global layer; llama.cpp hard-codes
# this pattern and the local rotary base when the GGUF does not say otherwise.
_GEMMA3_SWA_PATTERN = 6
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0


@dataclass(frozen=True)
class ReferenceConfig:
    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden: int
    head_dim: int
    eps: float
    rope_base: float
    rope_dims: int
    rope_linear_factor: float
    rope_interleaved: bool
    attn_scale: float
    sliding_window: int  # 0: no sliding window on any layer
    swa_pattern: int  # every swa_pattern-th layer is global; 0: all layers alike

    def is_local(self, layer: int) -> bool:
        """Whether `layer` uses the sliding window (and, for Gemma 3, the local rotary base)."""
        if self.sliding_window <= 0:
            return False
        if self.swa_pattern <= 0:
            return True
        return (layer + 1) % self.swa_pattern != 0


def _read_config(fields: dict[str, Any]) -> ReferenceConfig:
    arch = str(fields["general.architecture"])
    if arch not in REFERENCE_ARCHITECTURES:
        raise ValueError(f"the reference model does not implement the {arch!r} architecture")

    def get(key: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{key}", default)

    n_heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // n_heads))
    scaling = get("rope.scaling.type", "none")
    linear = float(get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
    if scaling not in ("none", "linear", None):
        raise ValueError(f"the reference model does not implement {scaling!r} RoPE scaling")
    is_gemma = arch == "gemma3"
    return ReferenceConfig(
        arch=arch,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        hidden=hidden,
        head_dim=head_dim,
        eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_base=float(get("rope.freq_base", 10_000.0)),
        rope_dims=int(get("rope.dimension_count", head_dim)),
        rope_linear_factor=linear,
        rope_interleaved=arch == "llama",
        # Gemma 3 (below 27B) sets query_pre_attn_scalar = head_dim: the usual 1/sqrt(d).
        attn_scale=1.0 / math.sqrt(head_dim),
        sliding_window=int(get("attention.sliding_window", 0)) if is_gemma else 0,
        swa_pattern=int(get("attention.sliding_window_pattern", _GEMMA3_SWA_PATTERN))
        if is_gemma
        else 0,
    )


class ReferenceModel:
    """Teacher-forced logits of a llama / qwen2 / gemma3 GGUF, computed in numpy."""

    def __init__(
        self, config: ReferenceConfig, weights: dict[str, F32Array], vocab_size: int
    ) -> None:
        self.config = config
        self.weights = weights
        self.vocab_size = vocab_size

    @classmethod
    def from_gguf(cls, path: Path | str) -> ReferenceModel:
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(Path(path))
        fields: dict[str, Any] = {}
        for key, field in reader.fields.items():
            if key.startswith("tokenizer."):
                continue  # large lists the forward pass does not need
            fields[key] = field.contents()
        config = _read_config(fields)
        weights: dict[str, F32Array] = {}
        for tensor in reader.tensors:
            array = dequantize(tensor.data, tensor.tensor_type)
            # GGUF lists dimensions innermost first; numpy wants them outermost first.
            shape = tuple(int(d) for d in reversed(tensor.shape))
            weights[tensor.name] = np.ascontiguousarray(array, dtype=np.float32).reshape(shape)
        embeddings = weights["token_embd.weight"]
        return cls(config, weights, int(embeddings.shape[0]))

    def w(self, name: str) -> F32Array:
        return self.weights[name]

    def logits(self, ids: Sequence[int], capture: Capture | None = None) -> F32Array:
        """Next-token logits [len(ids), vocab] for every position (causal, teacher forced)."""
        return self.lm_head(self.hidden_states(ids, capture))

    def hidden_states(self, ids: Sequence[int], capture: Capture | None = None) -> F32Array:
        """Final normed hidden states [T, hidden]."""
        cfg = self.config
        tokens = np.asarray(list(ids), dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("ids must be a non-empty sequence of token ids")
        x = self.w("token_embd.weight")[tokens].astype(np.float32)
        if cfg.arch == "gemma3":
            x = x * np.float32(math.sqrt(cfg.hidden))
        for layer in range(cfg.n_layers):
            x = self._block(x, layer, capture)
        return _rms_norm(x, self.w("output_norm.weight"), cfg.eps)

    def lm_head(self, hidden: F32Array) -> F32Array:
        # Tied embeddings when there is no separate output matrix.
        head = self.weights.get("output.weight", self.weights["token_embd.weight"])
        return hidden @ head.T

    def _block(self, x: F32Array, layer: int, capture: Capture | None) -> F32Array:
        cfg, p = self.config, f"blk.{layer}."
        gemma = cfg.arch == "gemma3"

        def seen(site: str, value: F32Array) -> F32Array:
            if capture is not None:
                capture(site, layer, value)
            return value

        h = seen("attn_in", _rms_norm(x, self.w(p + "attn_norm.weight"), cfg.eps))
        attn = self._attention(h, layer, seen)
        if gemma:
            attn = _rms_norm(attn, self.w(p + "post_attention_norm.weight"), cfg.eps)
        x = x + attn

        h = seen("ffn_in", _rms_norm(x, self.w(p + "ffn_norm.weight"), cfg.eps))
        gate = h @ self.w(p + "ffn_gate.weight").T
        up = h @ self.w(p + "ffn_up.weight").T
        act = _gelu_tanh(gate) if gemma else _silu(gate)
        ffn = seen("down_in", act * up) @ self.w(p + "ffn_down.weight").T
        if gemma:
            ffn = _rms_norm(ffn, self.w(p + "post_ffw_norm.weight"), cfg.eps)
        return x + ffn

    def _attention(
        self, h: F32Array, layer: int, seen: Callable[[str, F32Array], F32Array]
    ) -> F32Array:
        cfg, p = self.config, f"blk.{layer}."
        T, D = h.shape[0], cfg.head_dim

        def project(kind: str, heads: int) -> F32Array:
            out = h @ self.w(f"{p}attn_{kind}.weight").T
            bias = self.weights.get(f"{p}attn_{kind}.bias")
            if bias is not None:
                out = out + bias
            return out.reshape(T, heads, D)

        q = project("q", cfg.n_heads)
        k = project("k", cfg.n_kv_heads)
        v = project("v", cfg.n_kv_heads)
        if cfg.arch == "gemma3":  # per-head RMSNorm of queries and keys, before rotary
            q = _rms_norm(q, self.w(p + "attn_q_norm.weight"), cfg.eps)
            k = _rms_norm(k, self.w(p + "attn_k_norm.weight"), cfg.eps)

        local = cfg.is_local(layer)
        cos, sin = self._rotary(T, local)
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)

        # Grouped-query attention: query head i reads key/value head i // group.
        group = cfg.n_heads // cfg.n_kv_heads
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) * np.float32(cfg.attn_scale)
        pos = np.arange(T)
        allowed = pos[None, :] <= pos[:, None]  # key position s <= query position t
        if local:
            allowed &= pos[:, None] - pos[None, :] < cfg.sliding_window
        scores = np.where(allowed[None], scores, np.float32(-np.inf))
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hts,shd->thd", probs, v).reshape(T, cfg.n_heads * D)
        return seen("o_in", out.astype(np.float32)) @ self.w(p + "attn_output.weight").T

    def _rotary(self, T: int, local: bool) -> tuple[F32Array, F32Array]:
        cfg = self.config
        base, factor = cfg.rope_base, cfg.rope_linear_factor
        if local and cfg.arch == "gemma3":
            base, factor = _GEMMA3_LOCAL_ROPE_BASE, 1.0  # Gemma 3 scales global layers only
        half = cfg.rope_dims // 2
        inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.rope_dims)
        freq_factors = self.weights.get("rope_freqs.weight")
        if freq_factors is not None:  # Llama 3.1-style: per-frequency divisors
            inv_freq = inv_freq / freq_factors.reshape(-1)[:half].astype(np.float64)
        angles = (np.arange(T, dtype=np.float64) / factor)[:, None] * inv_freq[None, :]
        # [T, 1, half]: broadcast over heads.
        return (
            np.cos(angles)[:, None, :].astype(np.float32),
            np.sin(angles)[:, None, :].astype(np.float32),
        )

    def _rotate(self, x: F32Array, cos: F32Array, sin: F32Array) -> F32Array:
        cfg = self.config
        n = cfg.rope_dims
        rot, rest = x[..., :n], x[..., n:]
        if cfg.rope_interleaved:
            a, b = rot[..., 0::2], rot[..., 1::2]
            out = np.empty_like(rot)
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = a * sin + b * cos
        else:
            a, b = rot[..., : n // 2], rot[..., n // 2 :]
            out = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
        return np.concatenate([out, rest], axis=-1) if rest.shape[-1] else out


def _rms_norm(x: F32Array, weight: F32Array, eps: float) -> F32Array:
    # Normalises the last axis; the weight is used as stored (Gemma's 1 + w is already folded).
    scale = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(eps))
    return (x * scale * weight).astype(np.float32)


def _silu(x: F32Array) -> F32Array:
    # x * sigmoid(x) written with tanh: np.exp(-x) would overflow for very negative x.
    return (x * np.float32(0.5) * (1.0 + np.tanh(x * np.float32(0.5)))).astype(np.float32)


def _gelu_tanh(x: F32Array) -> F32Array:
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)
    return (np.float32(0.5) * x * (1.0 + np.tanh(inner))).astype(np.float32)
