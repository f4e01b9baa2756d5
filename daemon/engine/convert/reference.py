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
import mmap
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

_VOCABULARY_FIELDS = frozenset(
    f"tokenizer.ggml.{name}" for name in ("tokens", "scores", "token_type", "merges")
)


class UnsupportedArchitectureError(ValueError):
    """The GGUF's architecture (or a feature of it) is not implemented here."""


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
    local_rope_base: float  # rotary base of sliding-window layers
    sliding_window: int  # 0: no sliding window on any layer
    local_layers: tuple[bool, ...]  # per layer: uses the sliding window

    def is_local(self, layer: int) -> bool:
        """Whether `layer` uses the sliding window (and, for Gemma 3, the local rotary base)."""
        return self.sliding_window > 0 and self.local_layers[layer]


def _read_config(fields: dict[str, Any]) -> ReferenceConfig:
    arch = str(fields["general.architecture"])
    if arch not in REFERENCE_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"the reference model does not implement the {arch!r} architecture"
        )

    def get(key: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{key}", default)

    n_heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // n_heads))
    scaling = get("rope.scaling.type", "none")
    linear = float(get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
    if scaling not in ("none", "linear", None):
        raise UnsupportedArchitectureError(
            f"the reference model does not implement {scaling!r} RoPE scaling"
        )
    is_gemma = arch == "gemma3"
    n_layers = int(get("block_count"))
    pattern = get("attention.sliding_window_pattern", _GEMMA3_SWA_PATTERN)
    if isinstance(pattern, list | tuple):  # newer GGUFs list a flag per layer
        local = tuple(bool(flag) for flag in pattern)
    else:  # every pattern-th layer is global
        local = tuple(int(pattern) <= 0 or (i + 1) % int(pattern) != 0 for i in range(n_layers))
    return ReferenceConfig(
        arch=arch,
        n_layers=n_layers,
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
        local_rope_base=float(get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_BASE)),
        sliding_window=int(get("attention.sliding_window", 0)) if is_gemma else 0,
        local_layers=local,
    )


def release_mapped_pages(reader: Any) -> None:
    """Drop the pages of a gguf.GGUFReader's memory-mapped file that this process has read.

    Reading a tensor maps its pages in, and they count against the process until it unmaps
    the file: a 1.1 GB GGUF read once is 1.1 GB more resident. The mapping is read-only, so
    the kernel reads them again from the page cache (or the disk) if they are needed again.
    """
    mapped = getattr(getattr(reader, "data", None), "_mmap", None)
    if isinstance(mapped, mmap.mmap):
        mapped.madvise(mmap.MADV_DONTNEED)


class ReferenceModel:
    """Teacher-forced logits of a llama / qwen2 / gemma3 GGUF, computed in numpy."""

    def __init__(
        self, config: ReferenceConfig, tensors: dict[str, Any], metadata: dict[str, Any],
        load: Callable[[str], F32Array] | None = None,
    ) -> None:
        self.config = config
        self.metadata = metadata  # GGUF fields, without the vocabulary lists
        self._tensors = tensors  # gguf ReaderTensors, dequantized on first use
        # The importer's calibration passes its own reader, whose errors name the tensor and
        # the fix; the agreement checks keep this module's own.
        self._load = load or self._dequantize
        self._cache: dict[str, F32Array] = {}
        self.vocab_size = int(self._shape("token_embd.weight")[0])

    @classmethod
    def from_gguf(cls, path: Path | str) -> ReferenceModel:
        from gguf import GGUFReader

        return cls.from_reader(GGUFReader(Path(path)))

    @classmethod
    def from_reader(cls, reader: Any,
                    load: Callable[[str], F32Array] | None = None) -> ReferenceModel:
        """From an open gguf.GGUFReader: opening one parses the whole vocabulary, which
        takes seconds for large vocabularies, so callers that have one should share it."""
        metadata: dict[str, Any] = {}
        for key, field in reader.fields.items():
            if key in _VOCABULARY_FIELDS:
                continue  # large lists the forward pass does not need
            metadata[key] = field.contents()
        return cls(_read_config(metadata), {t.name: t for t in reader.tensors}, metadata, load)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def w(self, name: str) -> F32Array:
        """A tensor as float32, outermost dimension first (a linear weight is [out, in])."""
        cached = self._cache.get(name)
        if cached is None:
            array = self._load(name)
            cached = np.ascontiguousarray(array, dtype=np.float32).reshape(self._shape(name))
            self._cache[name] = cached
        return cached

    def _dequantize(self, name: str) -> F32Array:
        from gguf.quants import dequantize

        tensor = self._tensors[name]
        array: F32Array = dequantize(tensor.data, tensor.tensor_type)
        return array

    def _embed(self, tokens: npt.NDArray[np.int64]) -> F32Array:
        return self._rows("token_embd.weight", tokens)

    def _rows(self, name: str, rows: npt.NDArray[np.int64]) -> F32Array:
        """Some rows of a vocabulary matrix. Only those are dequantized: the whole matrix
        takes seconds and gigabytes for large vocabularies. GGUFReader gives one row of
        blocks per vocabulary entry."""
        if name in self._cache or name not in self._tensors:
            return self.w(name)[rows]  # a missing matrix: the loader says so
        from gguf.quants import dequantize

        tensor = self._tensors[name]
        try:
            values = dequantize(np.asarray(tensor.data)[rows], tensor.tensor_type)
        except NotImplementedError:
            return self.w(name)[rows]  # an unsupported type: the loader says so
        return np.asarray(values, dtype=np.float32).reshape(len(rows), -1)

    def _shape(self, name: str) -> tuple[int, ...]:
        # GGUF lists dimensions innermost first; numpy wants them outermost first.
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def logits(self, ids: Sequence[int], capture: Capture | None = None) -> F32Array:
        """Next-token logits [len(ids), vocab] for every position (causal, teacher forced)."""
        return self.lm_head(self.hidden_states(ids, capture))

    def hidden_states(self, ids: Sequence[int], capture: Capture | None = None) -> F32Array:
        """Final normed hidden states [T, hidden]."""
        cfg = self.config
        tokens = np.asarray(list(ids), dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("ids must be a non-empty sequence of token ids")
        x = self._embed(tokens)
        if cfg.arch == "gemma3":
            x = x * np.float32(math.sqrt(cfg.hidden))
        for layer in range(cfg.n_layers):
            x = self._block(x, layer, capture)
        return _rms_norm(x, self.w("output_norm.weight"), cfg.eps)

    def calibrate(self, sequences: Sequence[Sequence[int]], capture: Capture,
                  layer_done: Callable[[], None] = lambda: None,
                  held_out: Sequence[int] = ()) -> list[int]:
        """Run every sequence through the blocks one layer at a time, holding only that
        layer's weights in float32: bounded memory whatever the model's size (the importer's
        calibration). `layer_done` runs after each layer. `held_out` ids go through too,
        uncaptured, and the reference's top-1 next token at each of their positions is
        returned (empty without them)."""
        cfg = self.config
        xs = [self._embed_scaled(ids) for ids in sequences]
        held = self._embed_scaled(held_out) if held_out else None
        for layer in range(cfg.n_layers):
            xs = [self._block(x, layer, capture) for x in xs]
            if held is not None:
                held = self._block(held, layer, None)
            prefix = f"blk.{layer}."
            for name in [n for n in self._cache if n.startswith(prefix)]:
                del self._cache[name]
            layer_done()
        if held is None:
            return []
        return self.top1(_rms_norm(held, self.w("output_norm.weight"), cfg.eps))

    def top1(self, hidden: F32Array, chunk: int = 4096) -> list[int]:
        """The LM head's argmax for each row of `hidden`, reading the head `chunk` vocabulary
        rows at a time (the whole of Qwen's would be 0.93 GB in float32)."""
        name = "output.weight" if self.has("output.weight") else "token_embd.weight"
        best = np.full(len(hidden), -np.inf, dtype=np.float32)
        arg = np.zeros(len(hidden), dtype=np.int64)
        for start in range(0, self.vocab_size, chunk):
            rows = self._rows(name, np.arange(start, min(self.vocab_size, start + chunk)))
            logits = hidden @ rows.T
            top = logits.argmax(axis=1)
            value = logits[np.arange(len(hidden)), top]
            better = value > best
            best[better], arg[better] = value[better], top[better] + start
        return [int(i) for i in arg]

    def _embed_scaled(self, ids: Sequence[int]) -> F32Array:
        x = self._embed(np.asarray(list(ids), dtype=np.int64))
        if self.config.arch == "gemma3":
            x = x * np.float32(math.sqrt(self.config.hidden))
        return x

    def lm_head(self, hidden: F32Array) -> F32Array:
        # Tied embeddings when there is no separate output matrix.
        head = self.w("output.weight" if self.has("output.weight") else "token_embd.weight")
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
            if self.has(f"{p}attn_{kind}.bias"):
                out = out + self.w(f"{p}attn_{kind}.bias")
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
            base, factor = cfg.local_rope_base, 1.0  # Gemma 3 scales global layers only
        half = cfg.rope_dims // 2
        inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.rope_dims)
        if self.has("rope_freqs.weight"):  # Llama 3.1-style: per-frequency divisors
            inv_freq = inv_freq / self.w("rope_freqs.weight").reshape(-1)[:half]
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
    out: F32Array = (x * scale * weight).astype(np.float32)
    return out


def _silu(x: F32Array) -> F32Array:
    # x * sigmoid(x) written with tanh: np.exp(-x) would overflow for very negative x.
    out: F32Array = (x * np.float32(0.5) * (1.0 + np.tanh(x * np.float32(0.5)))).astype(np.float32)
    return out


def _gelu_tanh(x: F32Array) -> F32Array:
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)
    return (np.float32(0.5) * x * (1.0 + np.tanh(inner))).astype(np.float32)
