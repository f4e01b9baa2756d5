"""Per-architecture mapping of GGUF tensors onto CTranslate2's Transformer decoder.

Each builder reads hyper-parameters and tensors from a GGUF file and returns a filled
`TransformerDecoderModelSpec` plus the model's context length. The importer does the rest
(vocabulary, special tokens, quantization, saving).

What llama.cpp's converter changed and is undone here (see docs/MODELS.md):
- llama: Q/K rows permuted for interleaved rotary; CTranslate2 wants the half-split layout.
- gemma3: every RMSNorm weight stored as (1 + w); CTranslate2 computes x * (1 + gamma) with
  `layer_norm_use_residual`, so gamma = stored - 1.
- tied embeddings: no `output.weight`, the LM head is `token_embd.weight`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import ModelError, UnsupportedModelError
from .rotation import Rotation

F32Array = npt.NDArray[np.float32]


class TensorSource(Protocol):
    """What the builders need from a GGUF file (implemented by gguf_import._GGUF)."""

    @property
    def path(self) -> Path: ...

    @property
    def tensors(self) -> Mapping[str, Any]: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def require(self, key: str) -> Any: ...

    def tensor(self, name: str) -> F32Array: ...

    def vocabulary_matrix(self, name: str,
                          rows: Callable[[F32Array], F32Array] | None = None) -> Any:
        """The embedding table or the LM head: float32, or already int8 (int8_rows); `rows`
        transforms each block of float32 rows first."""


@dataclass(frozen=True)
class HyperParameters:
    arch: str
    n_layers: int
    n_heads: int
    n_kv: int
    hidden: int
    head_dim: int
    context_length: int
    rope_theta: float

    @classmethod
    def read(cls, source: TensorSource, arch: str) -> HyperParameters:
        n_heads = int(source.require(f"{arch}.attention.head_count"))
        hidden = int(source.require(f"{arch}.embedding_length"))
        if n_heads <= 0 or hidden <= 0:
            raise ModelError(f"{source.path.name} declares {n_heads} heads and width {hidden}.")
        return cls(
            arch=arch,
            n_layers=int(source.require(f"{arch}.block_count")),
            n_heads=n_heads,
            n_kv=int(source.get(f"{arch}.attention.head_count_kv", n_heads)),
            hidden=hidden,
            head_dim=int(source.get(f"{arch}.attention.key_length", hidden // n_heads)),
            context_length=int(source.get(f"{arch}.context_length", 2048)),
            rope_theta=float(source.get(f"{arch}.rope.freq_base", 10000.0)),
        )

    @property
    def spec_head_dim(self) -> int | None:
        """head_dim for CTranslate2, None when it is the default hidden / heads."""
        return None if self.head_dim * self.n_heads == self.hidden else self.head_dim

    @property
    def spec_kv_heads(self) -> int | None:
        return None if self.n_kv == self.n_heads else self.n_kv


LayerDone = Callable[[int, Any], None]
"""Called with each decoder layer's index and spec as soon as the layer is filled."""


def build_decoder_spec(source: TensorSource, arch: str,
                       layer_done: LayerDone = lambda _i, _layer: None,
                       rotate: bool = False) -> tuple[Any, int]:
    """The filled CTranslate2 spec for a GGUF of architecture `arch`, and its context length.

    `layer_done` sees each layer before the next is read, so the importer can smooth and
    quantize it there and only one layer's float32 weights are held at a time. `rotate`
    rotates the residual stream (rotation.py) as the spec is filled; the importer decides
    for which architectures.
    """
    builder = _BUILDERS.get(arch)
    if builder is None:
        raise UnsupportedModelError(
            f"{source.path.name} is a {arch!r} model; Hush can import "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} models. Choose a GGUF of a supported "
            "architecture."
        )
    hp = HyperParameters.read(source, arch)
    rotation = Rotation.of_size(hp.hidden) if rotate else None
    return builder(source, hp, layer_done, rotation), hp.context_length


def _lm_head(source: TensorSource, embeddings: Any) -> Any:
    # Tied embeddings: small models reuse the embedding matrix as the LM head.
    if "output.weight" in source.tensors:
        return source.vocabulary_matrix("output.weight")
    return embeddings


def _qkv(source: TensorSource, prefix: str) -> tuple[F32Array, F32Array, F32Array]:
    return (
        source.tensor(prefix + "attn_q.weight"),
        source.tensor(prefix + "attn_k.weight"),
        source.tensor(prefix + "attn_v.weight"),
    )


# --- llama, qwen2 ---------------------------------------------------------------------------


def _build_llama_like(source: TensorSource, hp: HyperParameters, layer_done: LayerDone,
                      rotation: Rotation | None) -> Any:
    """Llama-style decoder: RMSNorm, SwiGLU, half-split rotary. Also Qwen 2 (Q/K/V biases)."""
    from ctranslate2.specs import TransformerDecoderModelSpec, common_spec

    permute_qk = hp.arch == "llama"
    # Qwen 2 always has Q/K/V biases; some llama-architecture GGUFs carry them too.
    qkv_bias = hp.arch == "qwen2" or "blk.0.attn_q.bias" in source.tensors
    rope = _rope_scaling(source, hp.arch, hp.head_dim, hp.rope_theta)
    spec = TransformerDecoderModelSpec.from_config(
        hp.n_layers,
        hp.n_heads,
        activation=common_spec.Activation.SWISH,
        pre_norm=True,
        ffn_glu=True,
        rms_norm=True,
        rotary_dim=0,
        rotary_interleave=False,
        rotary_scaling_type=rope.get("type"),
        rotary_scaling_factor=rope.get("factor", 1.0),
        rotary_base=hp.rope_theta,
        original_max_position_embeddings=rope.get("original", 0),
        num_heads_kv=hp.spec_kv_heads,
        head_dim=hp.spec_head_dim,
    )
    decoder = spec.decoder
    decoder.scale_embeddings = False
    final_norm = source.tensor("output_norm.weight")
    if rotation is None:
        embeddings = source.vocabulary_matrix("token_embd.weight")
        decoder.embeddings.weight = embeddings
        decoder.layer_norm.gamma = final_norm
        decoder.projection.weight = _lm_head(source, embeddings)
    else:
        decoder.embeddings.weight = source.vocabulary_matrix(
            "token_embd.weight", rotation.embedding_rows)
        decoder.layer_norm.gamma = np.ones_like(final_norm)
        head = "output.weight" if "output.weight" in source.tensors else "token_embd.weight"
        decoder.projection.weight = source.vocabulary_matrix(
            head, lambda rows: rotation.head_rows(rows, final_norm))

    for i, layer in enumerate(decoder.layer):
        p = f"blk.{i}."
        attn, ffn = layer.self_attention, layer.ffn
        attn.layer_norm.gamma = source.tensor(p + "attn_norm.weight")
        ffn.layer_norm.gamma = source.tensor(p + "ffn_norm.weight")
        q, k, v = _qkv(source, p)
        if permute_qk:
            q, k = _unpermute_qk(q, hp.n_heads), _unpermute_qk(k, hp.n_kv)
        attn.linear[0].weight = np.concatenate([q, k, v])
        if qkv_bias:
            attn.linear[0].bias = np.concatenate(
                [source.tensor(p + f"attn_{x}.bias") for x in ("q", "k", "v")]
            )
        attn.linear[1].weight = source.tensor(p + "attn_output.weight")
        ffn.linear_0.weight = source.tensor(p + "ffn_gate.weight")
        ffn.linear_0_noact.weight = source.tensor(p + "ffn_up.weight")
        ffn.linear_1.weight = source.tensor(p + "ffn_down.weight")
        _apply_llama3_rope(attn, rope)
        if rotation is not None:
            rotation.layer(layer)
        layer_done(i, layer)
    return spec


def _unpermute_qk(weight: F32Array, heads: int) -> F32Array:
    """Undo llama.cpp's row permutation of Q/K for interleaved rotary embeddings.

    llama.cpp reshapes to (heads, 2, head_dim/2, in) and swaps the middle axes; CTranslate2
    uses the Hugging Face (half-split) layout, so we apply the inverse swap.
    """
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return weight.reshape(heads, rows // heads // 2, 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _rope_scaling(source: TensorSource, arch: str, head_dim: int, theta: float) -> dict[str, Any]:
    """RoPE scaling as CTranslate2 options; {} when the model uses plain RoPE."""
    from ctranslate2.specs.attention_spec import RotaryScalingType

    kind = source.get(f"{arch}.rope.scaling.type", "none")
    if kind == "linear":
        factor = float(source.get(f"{arch}.rope.scaling.factor", 1.0))
        return {"type": RotaryScalingType.Linear, "factor": factor} if factor != 1.0 else {}
    if kind not in ("none", None):
        raise UnsupportedModelError(
            f"The GGUF uses {kind!r} RoPE scaling, which Hush cannot import (supported: "
            "linear, and Llama 3 frequency factors)."
        )
    if "rope_freqs.weight" not in source.tensors:
        return {}
    # Llama 3.1+ GGUFs carry precomputed frequency divisors instead of the scaling
    # parameters. Recover the parameters by matching Meta's published defaults.
    freqs = source.tensor("rope_freqs.weight").reshape(-1)
    original = int(source.get(f"{arch}.rope.scaling.original_context_length", 8192))
    factor = float(freqs.max())
    expected = _llama3_divisors(head_dim, theta, factor, 1.0, 4.0, original)
    if expected.shape != freqs.shape or not np.allclose(expected, freqs, rtol=1e-3):
        raise UnsupportedModelError(
            "The GGUF has RoPE frequency factors that do not match Llama 3 scaling; Hush "
            "cannot import this model."
        )
    return {
        "type": RotaryScalingType.Llama3,
        "factor": factor,
        "low": 1.0,
        "high": 4.0,
        "original": original,
    }


def _llama3_divisors(
    head_dim: int, theta: float, factor: float, low: float, high: float, original: int
) -> F32Array:
    """What llama.cpp's converter writes as rope_freqs for Llama 3 scaling."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    low_wavelen, high_wavelen = original / low, original / high
    smooth = (original / wavelen - low) / (high - low)
    divisor = np.where(
        wavelen < high_wavelen,
        1.0,
        np.where(wavelen > low_wavelen, factor, 1.0 / ((1 - smooth) / factor + smooth)),
    )
    return divisor.astype(np.float32)


def _apply_llama3_rope(attn: Any, rope: dict[str, Any]) -> None:
    from ctranslate2.specs.attention_spec import RotaryScalingType

    if rope.get("type") is not RotaryScalingType.Llama3:
        return
    attn.rotary_low_freq_factor = np.float32(rope["low"])
    attn.rotary_high_freq_factor = np.float32(rope["high"])
    # The spec only declares a scaling factor for linear scaling, yet the Llama 3 kernel reads
    # it too; the spec class forbids new attributes, hence object.__setattr__.
    object.__setattr__(attn, "rotary_scaling_factor", np.float32(rope["factor"]))


# --- gemma3 ---------------------------------------------------------------------------------

# llama.cpp's defaults for Gemma 3 GGUFs that do not spell these out.
_GEMMA3_SWA_PATTERN = 6  # every 6th layer attends globally, the others to a sliding window
_GEMMA3_LOCAL_ROPE_BASE = 10000.0


def _gemma3_sliding_layers(source: TensorSource, hp: HyperParameters) -> list[bool]:
    """For each layer, True when it uses sliding-window (local) attention."""
    pattern = source.get(f"{hp.arch}.attention.sliding_window_pattern", _GEMMA3_SWA_PATTERN)
    if isinstance(pattern, list | tuple):
        flags = [bool(x) for x in pattern]
        if len(flags) != hp.n_layers:
            raise ModelError(
                f"{source.path.name}: the sliding-window pattern lists {len(flags)} layers but "
                f"the model has {hp.n_layers}; the file is inconsistent."
            )
        return flags
    n = int(pattern)
    # llama.cpp's rule: with pattern n, layer i is local unless i % n == n - 1.
    return [n == 0 or i % n < n - 1 for i in range(hp.n_layers)]


def _gemma_norm(spec: Any, stored: F32Array) -> None:
    """Set a Gemma RMSNorm: the GGUF stores 1 + w, CTranslate2 adds the 1 back itself."""
    spec.gamma = stored - np.float32(1.0)
    spec.layer_norm_use_residual = True


def _build_gemma3(source: TensorSource, hp: HyperParameters, layer_done: LayerDone,
                  _rotation: None) -> Any:
    """Gemma 3 text decoder: local/global attention, QK norms, sandwich norms, GeGLU."""
    from ctranslate2.specs import TransformerDecoderModelSpec, common_spec
    from ctranslate2.specs.attention_spec import RotaryScalingType

    arch = hp.arch
    window = int(source.get(f"{arch}.attention.sliding_window", 0))
    sliding = _gemma3_sliding_layers(source, hp) if window > 0 else [False] * hp.n_layers
    local_base = float(source.get(f"{arch}.rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_BASE))
    scaling = source.get(f"{arch}.rope.scaling.type", "none")
    factor = float(source.get(f"{arch}.rope.scaling.factor", 1.0))
    if scaling not in ("none", "linear", None):
        raise UnsupportedModelError(
            f"The GGUF uses {scaling!r} RoPE scaling; Hush imports Gemma 3 with linear or no "
            "RoPE scaling."
        )
    spec = TransformerDecoderModelSpec.from_config(
        hp.n_layers,
        hp.n_heads,
        activation=common_spec.Activation.GELUTanh,  # gelu_pytorch_tanh
        pre_norm=True,
        ffn_glu=True,
        rms_norm=True,
        rotary_dim=0,
        rotary_interleave=False,
        rotary_base=local_base,
        num_heads_kv=hp.spec_kv_heads,
        head_dim=hp.head_dim,
        sliding_window=window,
        pre_post_layer_norm=True,
        qk_norm=True,
    )
    decoder = spec.decoder
    decoder.scale_embeddings = True  # Gemma multiplies embeddings by sqrt(hidden)
    decoder.start_from_zero_embedding = False
    embeddings = source.vocabulary_matrix("token_embd.weight")
    decoder.embeddings.weight = embeddings
    _gemma_norm(decoder.layer_norm, source.tensor("output_norm.weight"))
    decoder.projection.weight = _lm_head(source, embeddings)

    for i, layer in enumerate(decoder.layer):
        p = f"blk.{i}."
        attn, ffn = layer.self_attention, layer.ffn
        if sliding[i]:
            attn.rotary_base = np.float32(local_base)
            attn.sliding_window = np.int32(window)
        else:
            # Global layers: long-range RoPE base, no window, and the model's RoPE scaling
            # (llama.cpp and transformers apply it to the global layers only).
            attn.rotary_base = np.float32(hp.rope_theta)
            attn.sliding_window = np.int32(0)
            if scaling == "linear" and factor != 1.0:
                object.__setattr__(attn, "rotary_scaling_type", np.int8(RotaryScalingType.Linear))
                object.__setattr__(attn, "rotary_scaling_factor", np.float32(factor))
        for norm, name in (
            (layer.input_layer_norm, "attn_norm"),
            (layer.post_attention_layer_norm, "post_attention_norm"),
            (layer.pre_feedforward_layer_norm, "ffn_norm"),
            (layer.post_feedforward_layer_norm, "post_ffw_norm"),
            (attn.q_norm, "attn_q_norm"),
            (attn.k_norm, "attn_k_norm"),
        ):
            _gemma_norm(norm, source.tensor(f"{p}{name}.weight"))
        attn.linear[0].weight = np.concatenate(_qkv(source, p))
        attn.linear[1].weight = source.tensor(p + "attn_output.weight")
        ffn.linear_0.weight = source.tensor(p + "ffn_gate.weight")
        ffn.linear_0_noact.weight = source.tensor(p + "ffn_up.weight")
        ffn.linear_1.weight = source.tensor(p + "ffn_down.weight")
        layer_done(i, layer)
    return spec


_BUILDERS: dict[str, Callable[[TensorSource, HyperParameters, LayerDone, Any], Any]] = {
    "llama": _build_llama_like,
    "qwen2": _build_llama_like,
    "gemma3": _build_gemma3,
}
SUPPORTED_ARCHITECTURES = tuple(_BUILDERS)
