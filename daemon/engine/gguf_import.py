"""Import a GGUF file as a CTranslate2 model directory Hush can load.

The output directory holds CTranslate2's `model.bin`, `config.json` and vocabulary, plus
`tokenizer.json` and `hush-model.json`. It is built next to `dest` and renamed into place at
the end, so `dest` either does not exist or is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelError, UnsupportedModelError
from .model_info import ModelInfo
from .tokenizer import TOKENIZER_FILE, GGUFVocab, build_tokenizer_json

F32Array = npt.NDArray[np.float32]

# Weights are dequantized to float32 and re-quantized by CTranslate2; these are the
# CTranslate2 types that run on CPU.
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32")

# Architectures whose weights map onto CTranslate2's Llama-style decoder.
# permute_qk: llama.cpp reorders Q/K rows of "llama" models for interleaved rotary; undo it.
# qkv_bias: Qwen 2 has biases on the Q, K and V projections.
_ARCHITECTURES: dict[str, dict[str, bool]] = {
    "llama": {"permute_qk": True, "qkv_bias": False},
    "qwen2": {"permute_qk": False, "qkv_bias": True},
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHITECTURES)

# Tokens that end an assistant turn in the common chat formats.
_END_OF_TURN_CANDIDATES = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
)


class _GGUF:
    """Read access to a GGUF file that turns the gguf package's errors into ModelError."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader  # imported lazily: only the importer needs gguf

        self.path = path
        if not path.is_file():
            raise ModelError(f"{path} does not exist or is not a file.")
        try:
            self._reader = GGUFReader(path)
        except OSError as exc:
            raise ModelError(f"Cannot read {path}: {exc}") from exc
        except Exception as exc:  # gguf raises ValueError, IndexError, struct errors, ...
            raise ModelError(
                f"{path} is not a valid GGUF file or is truncated ({type(exc).__name__}: "
                f"{exc}). Download it again, or check that it is a GGUF model file."
            ) from exc
        self.tensors = {t.name: t for t in self._reader.tensors}

    def get(self, key: str, default: Any = None) -> Any:
        field = self._reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception as exc:
            raise ModelError(f"{self.path}: metadata field {key!r} is damaged ({exc}).") from exc

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ModelError(
                f"{self.path} lacks the metadata field {key!r}; the file is incomplete or was "
                "written by an old converter. Use a GGUF made by a recent llama.cpp."
            )
        return value

    def tensor(self, name: str) -> F32Array:
        from gguf.quants import dequantize

        info = self.tensors.get(name)
        if info is None:
            raise ModelError(
                f"{self.path} lacks the tensor {name!r}; the file is incomplete or not a "
                "complete model of its declared architecture."
            )
        try:
            array = dequantize(info.data, info.tensor_type)
        except NotImplementedError:
            raise UnsupportedModelError(
                f"Tensor {name!r} uses the GGML type {info.tensor_type.name}, which cannot be "
                "dequantized here. Use a GGUF quantized as F32, F16, BF16, Q8_0, Q6_K, Q5_K, "
                "Q4_K, Q5_0/1 or Q4_0/1."
            ) from None
        except Exception as exc:
            raise ModelError(
                f"{self.path}: tensor {name!r} is damaged or truncated ({exc}). Download the "
                "file again."
            ) from exc
        expected = tuple(int(d) for d in reversed(info.shape))
        if array.shape != expected:
            array = array.reshape(expected)
        # Copy: the file is memory-mapped and F32 tensors come back as views of it.
        return np.array(array, dtype=np.float32, copy=True)

    def parameter_count(self) -> int:
        return sum(int(t.n_elements) for t in self.tensors.values())


def import_gguf(gguf_path: Path, dest: Path, *, quantization: str = "int8") -> ModelInfo:
    """Convert a GGUF model to a Hush model directory at `dest` (which must not exist)."""
    gguf_path, dest = Path(gguf_path), Path(dest)
    if quantization not in QUANTIZATIONS:
        raise ModelError(
            f"Unsupported quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}."
        )
    if dest.exists():
        raise ModelError(f"{dest} already exists; remove it or choose another destination.")
    dest.parent.mkdir(parents=True, exist_ok=True)

    source = _GGUF(gguf_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.importing-", dir=dest.parent))
    try:
        info = _convert(source, tmp, quantization)
        if dest.exists():
            raise ModelError(f"{dest} appeared while importing; remove it and import again.")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(info, path=dest)


def _convert(source: _GGUF, out: Path, quantization: str) -> ModelInfo:
    arch = str(source.require("general.architecture"))
    if arch not in _ARCHITECTURES:
        raise UnsupportedModelError(
            f"{source.path.name} is a {arch!r} model; Hush can import "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} models. Choose a GGUF of a supported "
            "architecture."
        )
    vocab = _read_vocab(source)
    # Build the tokenizer first: it is cheap and fails fast on unsupported vocabularies.
    tokenizer_json = build_tokenizer_json(vocab)

    spec, context_length = _build_decoder_spec(source, arch, vocab)
    tokens = list(vocab.tokens)
    rows = int(spec.decoder.embeddings.weight.shape[0])
    if rows < len(tokens):
        raise ModelError(
            f"The embedding matrix has {rows} rows but the vocabulary {len(tokens)} tokens; "
            "the GGUF is inconsistent."
        )
    # Padded embedding rows (vocab rounded up to a multiple of 64/128) need names too.
    tokens += [f"<extra_id_{i}>" for i in range(rows - len(tokens))]
    spec.register_vocabulary(tokens)

    bos = _special_token(source, tokens, "tokenizer.ggml.bos_token_id")
    eos = _special_token(source, tokens, "tokenizer.ggml.eos_token_id")
    unk = _special_token(source, tokens, "tokenizer.ggml.unknown_token_id")
    spec.config.bos_token = bos if bos is not None else (eos or tokens[0])
    spec.config.eos_token = eos if eos is not None else tokens[0]
    spec.config.unk_token = unk if unk is not None else ""
    spec.config.layer_norm_epsilon = float(
        source.require(f"{arch}.attention.layer_norm_rms_epsilon")
    )

    try:
        spec.validate()  # also converts Python values to the arrays optimize() expects
        spec.optimize(quantization=quantization)
        spec.save(str(out))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"CTranslate2 rejected the converted model: {exc}") from exc
    (out / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")

    template = source.get("tokenizer.chat_template")
    info = ModelInfo(
        architecture=arch,
        parameter_count=source.parameter_count(),
        context_length=context_length,
        quantization=quantization,
        chat_template=str(template) if template else None,
        bos_token=bos,
        eos_token=eos,
        end_of_turn_tokens=_end_of_turn_tokens(source, tokens, eos),
        add_bos=bool(source.get("tokenizer.ggml.add_bos_token", arch == "llama" and bos)),
        source_sha256=_sha256(source.path),
    )
    info.save(out)
    return info


def _read_vocab(source: _GGUF) -> GGUFVocab:
    tokens = [str(t) for t in source.require("tokenizer.ggml.tokens")]
    types = source.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ModelError("The GGUF's token types and tokens differ in length; the file is damaged.")
    return GGUFVocab(
        model=str(source.require("tokenizer.ggml.model")),
        pre=str(source.get("tokenizer.ggml.pre", "default")),
        tokens=tokens,
        token_types=[int(t) for t in types],
        merges=[str(m) for m in source.get("tokenizer.ggml.merges") or []],
        scores=[float(s) for s in source.get("tokenizer.ggml.scores") or []],
    )


def _special_token(source: _GGUF, tokens: list[str], key: str) -> str | None:
    token_id = source.get(key)
    if token_id is None or not 0 <= int(token_id) < len(tokens):
        return None
    return tokens[int(token_id)]


def _end_of_turn_tokens(source: _GGUF, tokens: list[str], eos: str | None) -> tuple[str, ...]:
    present = set(tokens)
    found: list[str] = [eos] if eos is not None else []
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        token = _special_token(source, tokens, key)
        if token is not None:
            found.append(token)
    found += [t for t in _END_OF_TURN_CANDIDATES if t in present]
    return tuple(dict.fromkeys(found))  # de-duplicated, order kept


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unpermute_qk(weight: F32Array, heads: int) -> F32Array:
    """Undo llama.cpp's row permutation of Q/K for interleaved rotary embeddings.

    llama.cpp reshapes to (heads, 2, head_dim/2, in) and swaps the middle axes; CTranslate2
    uses the Hugging Face (half-split) layout, so we apply the inverse swap.
    """
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return weight.reshape(heads, rows // heads // 2, 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _build_decoder_spec(source: _GGUF, arch: str, vocab: GGUFVocab) -> tuple[Any, int]:
    from ctranslate2.specs import TransformerDecoderModelSpec, common_spec

    profile = _ARCHITECTURES[arch]
    n_layers = int(source.require(f"{arch}.block_count"))
    n_heads = int(source.require(f"{arch}.attention.head_count"))
    n_kv = int(source.get(f"{arch}.attention.head_count_kv", n_heads))
    hidden = int(source.require(f"{arch}.embedding_length"))
    head_dim = int(source.get(f"{arch}.attention.key_length", hidden // n_heads))
    context_length = int(source.get(f"{arch}.context_length", 2048))
    rope_theta = float(source.get(f"{arch}.rope.freq_base", 10000.0))
    rope = _rope_scaling(source, arch, head_dim, rope_theta)

    spec = TransformerDecoderModelSpec.from_config(
        n_layers,
        n_heads,
        activation=common_spec.Activation.SWISH,
        pre_norm=True,
        ffn_glu=True,
        rms_norm=True,
        rotary_dim=0,
        rotary_interleave=False,
        rotary_scaling_type=rope.get("type"),
        rotary_scaling_factor=rope.get("factor", 1.0),
        rotary_base=rope_theta,
        original_max_position_embeddings=rope.get("original", 0),
        num_heads_kv=None if n_kv == n_heads else n_kv,
        head_dim=None if head_dim * n_heads == hidden else head_dim,
    )
    decoder = spec.decoder
    decoder.scale_embeddings = False
    embeddings = source.tensor("token_embd.weight")
    decoder.embeddings.weight = embeddings
    decoder.layer_norm.gamma = source.tensor("output_norm.weight")
    # Tied embeddings: small models reuse the embedding matrix as the LM head.
    if "output.weight" in source.tensors:
        decoder.projection.weight = source.tensor("output.weight")
    else:
        decoder.projection.weight = embeddings

    def linear(name: str) -> F32Array:
        return source.tensor(name)

    for i, layer in enumerate(decoder.layer):
        p = f"blk.{i}."
        attn, ffn = layer.self_attention, layer.ffn
        attn.layer_norm.gamma = linear(p + "attn_norm.weight")
        ffn.layer_norm.gamma = linear(p + "ffn_norm.weight")
        q, k = linear(p + "attn_q.weight"), linear(p + "attn_k.weight")
        v = linear(p + "attn_v.weight")
        if profile["permute_qk"]:
            q, k = _unpermute_qk(q, n_heads), _unpermute_qk(k, n_kv)
        attn.linear[0].weight = np.concatenate([q, k, v])
        if profile["qkv_bias"]:
            attn.linear[0].bias = np.concatenate(
                [linear(p + "attn_q.bias"), linear(p + "attn_k.bias"), linear(p + "attn_v.bias")]
            )
        attn.linear[1].weight = linear(p + "attn_output.weight")
        ffn.linear_0.weight = linear(p + "ffn_gate.weight")
        ffn.linear_0_noact.weight = linear(p + "ffn_up.weight")
        ffn.linear_1.weight = linear(p + "ffn_down.weight")
        _apply_llama3_rope(attn, rope)
    return spec, context_length


def _rope_scaling(source: _GGUF, arch: str, head_dim: int, theta: float) -> dict[str, Any]:
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
