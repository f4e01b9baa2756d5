"""SmoothQuant-style rescaling so CTranslate2's int8 matrix products lose less.

CTranslate2's int8 GEMM quantizes each row of the *activations* (one token) with a single
scale. Small Llama-family models have a few input channels whose activations are tens of times
larger than the rest; those channels set the row's scale and the other channels are rounded to
a handful of levels. That, not the rounding of the weights, is what makes int8 SmolLM2 lose the
answer to simple questions.

SmoothQuant (Xiao et al., 2023) moves part of that range into the weights, where CTranslate2
quantizes per output row and a larger column costs little: for each input channel j,

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

the activation is divided by s_j and the weight column multiplied by it. The model computes the
same function in exact arithmetic, because the division is folded into something linear that
precedes the product:

- Q/K/V input: the attention RMSNorm weight (per-channel) is divided by s.
- gate/up input: the feed-forward RMSNorm weight is divided by s.
- down input (act(gate) * up): the up rows are divided by s; the product is linear in up.
- attention output-projection input: the V rows (and V bias) are divided by s. Attention mixes
  tokens but never channels, so it is linear per channel of V; with grouped-query attention one
  V channel feeds several heads, so those heads share one scale.

Activation maxima come from the numpy reference model (reference.py) run on a short built-in
calibration text, so importing needs no network and no extra files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..chat_template import render_chat, uses_chat_template
from .reference import (
    SITES,
    ReferenceModel,
    UnsupportedArchitectureError,
    release_mapped_pages,
)

F32Array = npt.NDArray[np.float32]
Maxima = dict[tuple[str, int], F32Array]  # (site, layer) -> per-channel max |activation|

# Measured on SmolLM2-135M (0.35 / 0.5 / 0.65 / 0.8): 0.5 agreed best with float32.
DEFAULT_ALPHA = 0.5
# int16 keeps 16 bits per activation: outliers cost it nothing worth an extra import step.
SMOOTHED_QUANTIZATIONS = ("int8", "int8_float32")
# Guards against division by zero for channels that are never active or have zero weights.
_FLOOR = 1e-5

# Calibration text: original prose, a conversation and some code (Qwen Coder reads code), a
# few hundred tokens in all. Only per-channel maxima are taken from it, so it need not be long;
# it is deliberately unrelated to the prompts the tests ask.
_PROSE = (
    "The lighthouse keeper climbed the spiral stairs twice every night, once at dusk to light "
    "the lamp and once before dawn to trim the wick. In winter the wind off the sea was so "
    "strong that the glass of the lantern room hummed, and ice gathered on the rails of the "
    "gallery. He kept a log of every ship that passed: its name when he could read it, the "
    "direction it was sailing, and the state of the weather. Over thirty years the log grew "
    "to forty volumes, which are now kept in the county library, where historians use them "
    "to study the coastal trade of the nineteenth century."
)
_CONVERSATION = (
    {"role": "system", "content": "You are a patient tutor who answers briefly."},
    {"role": "user", "content": "How many legs does a spider have?"},
    {"role": "assistant", "content": "A spider has eight legs, unlike insects, which have six."},
    {"role": "user", "content": "Why do leaves change colour in autumn?"},
    {
        "role": "assistant",
        "content": "As days shorten, trees stop making green chlorophyll, so the yellow and "
        "orange pigments that were there all along become visible.",
    },
)
_CODE = '''def median(values: list[float]) -> float:
    """Return the middle value of a non-empty list."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2 == 1:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
'''


def calibration_texts(
    chat_template: str | None, *, bos_token: str | None, eos_token: str | None
) -> list[str]:
    """The calibration texts, the conversation in the model's own chat format if it has one."""
    if chat_template is not None and uses_chat_template(chat_template):
        conversation = render_chat(
            chat_template,
            _CONVERSATION,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=False,
        )
    else:
        conversation = "\n\n".join(m["content"] for m in _CONVERSATION)
    return [conversation, _PROSE, _CODE]


def activation_maxima(model: ReferenceModel, sequences: Sequence[Sequence[int]],
                      layer_done: Callable[[], None] = lambda: None,
                      held_out: Sequence[int] = ()) -> tuple[Maxima, list[int]]:
    """Per-channel max |x| at the input of every linear layer, over all `sequences`, and the
    reference's top-1 next tokens over `held_out` (computed in the same pass)."""
    maxima: Maxima = {}

    def capture(site: str, layer: int, x: F32Array) -> None:
        peak = np.abs(x).max(axis=0)
        key = (site, layer)
        maxima[key] = np.maximum(maxima[key], peak) if key in maxima else peak

    top1 = model.calibrate(sequences, capture, layer_done, held_out)
    return maxima, top1


def smoothing_scales(act_max: F32Array, weight_max: F32Array, alpha: float) -> F32Array:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha); divide activations by s, weights times s."""
    act = np.maximum(act_max.astype(np.float64), _FLOOR)
    weight = np.maximum(weight_max.astype(np.float64), _FLOOR)
    return (act**alpha / weight ** (1.0 - alpha)).astype(np.float32)


@dataclass(frozen=True)
class Smoother:
    """Calibrated smoothing, applied one decoder layer at a time as the importer fills them
    (so that each layer can be quantized, and its float32 weights freed, right after)."""

    maxima: Mapping[tuple[str, int], F32Array]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    alpha: float = DEFAULT_ALPHA
    sites: Sequence[str] = SITES

    def layer(self, i: int, layer: Any) -> None:
        """Rescale layer `i` of a CTranslate2 TransformerDecoderSpec (before quantization).

        Expects the layout the importer builds: fused QKV in self_attention.linear[0], gate /
        up / down in ffn.linear_0 / linear_0_noact / linear_1, and either a pre-norm per block
        or Gemma-style input_layer_norm / pre_feedforward_layer_norm.
        """
        maxima, alpha, sites = self.maxima, self.alpha, self.sites
        attn, ffn = layer.self_attention, layer.ffn
        qkv, out = attn.linear[0], attn.linear[1]
        gate, up, down = ffn.linear_0, ffn.linear_0_noact, ffn.linear_1
        if "attn_in" in sites:
            attn_norm = getattr(layer, "input_layer_norm", None) or attn.layer_norm
            s = smoothing_scales(maxima["attn_in", i], _column_max(qkv.weight), alpha)
            _scale_norm(attn_norm, 1.0 / s)
            qkv.weight = qkv.weight * s
        if "ffn_in" in sites:
            ffn_norm = getattr(layer, "pre_feedforward_layer_norm", None) or ffn.layer_norm
            w_max = np.maximum(_column_max(gate.weight), _column_max(up.weight))
            s = smoothing_scales(maxima["ffn_in", i], w_max, alpha)
            _scale_norm(ffn_norm, 1.0 / s)
            gate.weight = gate.weight * s
            up.weight = up.weight * s
        if "down_in" in sites:
            s = smoothing_scales(maxima["down_in", i], _column_max(down.weight), alpha)
            up.weight = up.weight / s[:, None]
            down.weight = down.weight * s
        if "o_in" in sites and not _is_set(getattr(attn, "v_norm", None)):
            _smooth_value_output(qkv, out, maxima["o_in", i], self.n_heads, self.n_kv_heads,
                                 self.head_dim, alpha)


def _smooth_value_output(
    qkv: Any,
    out: Any,
    act_max: F32Array,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    alpha: float,
) -> None:
    group = n_heads // n_kv_heads
    # Channel (h, d) of the output projection's input reads V channel (h // group, d): take the
    # maxima over the heads of a group so they can share one scale.
    act = act_max.reshape(n_kv_heads, group, head_dim).max(axis=1)
    w_cols = _column_max(out.weight).reshape(n_kv_heads, group, head_dim).max(axis=1)
    s_kv = smoothing_scales(act, w_cols, alpha)  # [n_kv_heads, head_dim]
    v_start = (n_heads + n_kv_heads) * head_dim  # rows: Q, then K, then V
    weight = qkv.weight.copy()
    weight[v_start:] /= s_kv.reshape(-1, 1)
    qkv.weight = weight
    if _is_set(qkv.bias):
        bias = np.array(qkv.bias, dtype=np.float32, copy=True)
        bias[v_start:] /= s_kv.reshape(-1)
        qkv.bias = bias
    out.weight = out.weight * np.repeat(s_kv[:, None, :], group, axis=1).reshape(-1)


def _column_max(weight: F32Array) -> F32Array:
    peak: F32Array = np.abs(weight).max(axis=0)
    return peak


def _is_set(value: Any) -> bool:
    # Unset optional spec variables hold a sentinel string or None.
    return value is not None and not isinstance(value, str)


def _scale_norm(norm: Any, factor: F32Array) -> None:
    """Multiply an RMSNorm's effective per-channel weight by `factor`."""
    gamma = np.asarray(norm.gamma, dtype=np.float32)
    residual = getattr(norm, "layer_norm_use_residual", None)
    if _is_set(residual) and bool(residual):
        # Gemma: CTranslate2 computes (1 + gamma), so the effective weight is 1 + gamma.
        norm.gamma = ((1.0 + gamma) * factor - 1.0).astype(np.float32)
    else:
        norm.gamma = (gamma * factor).astype(np.float32)


def calibrate(
    reader: Any,
    tokenizer_files: Mapping[str, bytes],
    *,
    bos_token: str | None,
    eos_token: str | None,
    alpha: float | None = None,
    sites: Sequence[str] = SITES,
    load: Callable[[str], F32Array] | None = None,
) -> Calibration | None:
    """The importer's hook: measure the activation maxima of the GGUF open in `reader` (a
    gguf.GGUFReader) on the built-in texts, and the reference's next tokens over
    agreement.HELD_OUT_TEXT, reading weights with `load` (the importer's, for its error
    messages). None for architectures the reference model does not implement: those are
    imported unsmoothed."""
    from ..tokenizer import Tokenizer
    from .agreement import HELD_OUT_TEXT

    try:
        model = ReferenceModel.from_reader(reader, load)
    except UnsupportedArchitectureError:
        return None
    meta = model.metadata
    template = meta.get("tokenizer.chat_template")
    texts = calibration_texts(
        str(template) if template else None, bos_token=bos_token, eos_token=eos_token
    )
    # Calibrate on what the engine will run: with BOS when the model wants one.
    bos_field = meta.get("tokenizer.ggml.bos_token_id")
    wants_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    bos = int(bos_field) if wants_bos and bos_field is not None else None
    encode: Callable[[str], list[int]] = Tokenizer.from_files(tokenizer_files).encode
    sequences = []
    for text in [*texts, HELD_OUT_TEXT]:
        ids = encode(text)
        if bos is not None and ids[:1] != [bos]:
            ids = [bos, *ids]
        sequences.append(ids)
    *sequences, held_out = sequences
    cfg = model.config
    maxima, top1 = activation_maxima(model, sequences, lambda: release_mapped_pages(reader),
                                     held_out)
    smoother = Smoother(maxima, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                        head_dim=cfg.head_dim, alpha=DEFAULT_ALPHA if alpha is None else alpha,
                        sites=sites)
    return Calibration(smoother, held_out, top1)


@dataclass(frozen=True)
class Calibration:
    smoother: Smoother
    held_out_ids: list[int]
    """agreement.HELD_OUT_TEXT as the model reads it."""
    reference_top1: list[int]
    """The float32 reference's next token at each of those positions."""
