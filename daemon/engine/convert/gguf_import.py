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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError, UnsupportedModelError
from ..model_info import ModelInfo
from ..tokenizer import Tokenizer
from .agreement import write_reference
from .architectures import SUPPORTED_ARCHITECTURES, build_decoder_spec
from .gguf_vocab import GGUFVocab
from .int8_rows import QuantizedRows, quantize_streamed
from .reference import release_mapped_pages
from .tokenizer_files import build_tokenizer_files
from .vocab_pruning import kept_ids, restrict, write_kept

F32Array = npt.NDArray[np.float32]

# Weights are dequantized to float32 and re-quantized by CTranslate2; these are the
# CTranslate2 types that run on CPU.
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32")

# CTranslate2 quantizes these per output row: the vocabulary matrices can be read int8.
_INT8_QUANTIZATIONS = ("int8", "int8_float32")

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

    int8_vocabulary = False
    """Set for int8 imports: vocabulary_matrix() then quantizes as it reads (int8_rows.py)."""

    def tensor(self, name: str) -> F32Array:
        info = self._info(name)
        array = self._dequantize(name, info, info.data)
        expected = tuple(int(d) for d in reversed(info.shape))
        if array.shape != expected:
            array = array.reshape(expected)
        # Copy only what is a view of the memory-mapped file (F32 tensors): dequantized
        # arrays are fresh, and a second copy of a large embedding costs a gigabyte.
        return np.array(array, dtype=np.float32,
                        copy=bool(np.may_share_memory(array, info.data)))

    def vocabulary_matrix(self, name: str, rows: Callable[[F32Array], F32Array] | None = None
                          ) -> F32Array | QuantizedRows:
        transform = rows or (lambda block: block)
        if not self.int8_vocabulary:
            return transform(self.tensor(name))
        info = self._info(name)
        n_rows = int(info.shape[-1])  # GGUF lists dimensions innermost first

        def read(start: int, stop: int) -> F32Array:
            chunk = self._dequantize(name, info, info.data[start:stop])
            return transform(np.asarray(chunk, dtype=np.float32).reshape(stop - start, -1))

        return quantize_streamed(n_rows, read)

    def _info(self, name: str) -> Any:
        info = self.tensors.get(name)
        if info is None:
            raise ModelError(
                f"{self.path} lacks the tensor {name!r}; the file is incomplete or not a "
                "complete model of its declared architecture."
            )
        return info

    def _dequantize(self, name: str, info: Any, data: Any) -> F32Array:
        from gguf.quants import dequantize

        try:
            array: F32Array = dequantize(data, info.tensor_type)
        except NotImplementedError:
            raise UnsupportedModelError(
                f"Tensor {name!r} uses the GGML type {info.tensor_type.name}, which cannot be "
                "dequantized here. Use a GGUF quantized as F32, F16, BF16, Q8_0, Q6_K, Q5_K, "
                "Q4_K, Q3_K, Q2_K, Q5_0/1, Q4_0/1 or an IQ type."
            ) from None
        except Exception as exc:
            raise ModelError(
                f"{self.path}: tensor {name!r} is damaged or truncated ({exc}). Download the "
                "file again."
            ) from exc
        return array

    def parameter_count(self) -> int:
        return sum(int(t.n_elements) for t in self.tensors.values())


@dataclasses.dataclass(frozen=True)
class VocabPruning:
    """Opt-in: keep only `size` vocabulary entries (vocab_pruning.py explains which)."""

    size: int
    corpus: tuple[str, ...] = ()
    """Texts in the users' languages; the tokens they use are kept first."""


def import_gguf(
    gguf_path: Path, dest: Path, *, quantization: str = "int8", smooth: bool | None = None,
    prune: VocabPruning | None = None, repetition_penalty: float | None = None,
    rotate: bool | None = None,
) -> ModelInfo:
    """Convert a GGUF model to a Hush model directory at `dest` (which must not exist).

    smooth: SmoothQuant rescaling (smoothing.py); None means on for int8 quantizations.
    rotate: the residual rotation (rotation.py); None means on for int8 quantizations of the
        architectures where it was measured to help.
    prune: a smaller vocabulary, for faster decoding at some cost in quality.
    repetition_penalty: the model's measured default, recorded in hush-model.json.
    """
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
        info = _convert(source, tmp, quantization, smooth, prune, repetition_penalty, rotate)
        if dest.exists():
            raise ModelError(f"{dest} appeared while importing; remove it and import again.")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(info, path=dest)


def _convert(source: _GGUF, out: Path, quantization: str, smooth: bool | None,
             prune: VocabPruning | None, repetition_penalty: float | None,
             rotate: bool | None) -> ModelInfo:
    arch = str(source.require("general.architecture"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{source.path.name} is a {arch!r} model; Hush can import "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} models. Choose a GGUF of a supported "
            "architecture."
        )
    vocab = _read_vocab(source)
    # Build the tokenizer first: it is cheap and fails fast on unsupported vocabularies.
    full_tokenizer_files = tokenizer_files = build_tokenizer_files(vocab)
    kept: list[int] | None = None
    if prune is not None and prune.size < len(vocab.tokens):
        kept, tokenizer_files = _pruned_tokenizer(vocab, tokenizer_files, prune)

    tokens = list(vocab.tokens)
    bos = _special_token(source, tokens, "tokenizer.ggml.bos_token_id")
    eos = _special_token(source, tokens, "tokenizer.ggml.eos_token_id")
    unk = _special_token(source, tokens, "tokenizer.ggml.unknown_token_id")

    # SmoothQuant (smoothing.py): int8 GEMMs quantize each activation row with one scale, so
    # outlier channels drown the rest; per-channel scales are folded into the weights.
    # Calibrated with the whole vocabulary: a pruned model is then exactly the full one with
    # fewer LM-head rows, and its quality cost is the pruning's alone.
    from .reference import SITES
    from .rotation import ROTATED_ARCHITECTURES, UNROTATED_SITES
    from .smoothing import SMOOTHED_QUANTIZATIONS, calibrate

    if smooth is None:
        smooth = quantization in SMOOTHED_QUANTIZATIONS
    # The residual rotation (rotation.py) removes the outliers at the Q/K/V and gate/up
    # inputs, so SmoothQuant then rescales only the inputs it cannot reach.
    if rotate is None:
        rotate = quantization in SMOOTHED_QUANTIZATIONS and arch in ROTATED_ARCHITECTURES
    elif rotate and arch not in ROTATED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"The residual rotation is implemented for {', '.join(ROTATED_ARCHITECTURES)} "
            f"models, not {arch!r}; import this model without it."
        )
    sites = UNROTATED_SITES if rotate else SITES
    calibration = (calibrate(source._reader, full_tokenizer_files, bos_token=bos,
                             eos_token=eos, load=source.tensor, sites=sites)
                   if smooth else None)
    smoother = calibration.smoother if calibration else None

    source.int8_vocabulary = quantization in _INT8_QUANTIZATIONS

    def layer_done(i: int, layer: Any) -> None:
        if smoother is not None:
            smoother.layer(i, layer)
        _quantize(layer, quantization)
        release_mapped_pages(source._reader)

    spec, context_length = build_decoder_spec(source, arch, layer_done, rotate=rotate)
    rows = int(spec.decoder.embeddings.weight.shape[0])
    if rows < len(tokens):
        raise ModelError(
            f"The embedding matrix has {rows} rows but the vocabulary {len(tokens)} tokens; "
            "the GGUF is inconsistent."
        )
    # Padded embedding rows (vocab rounded up to a multiple of 64/128) need names too.
    tokens += [f"<extra_id_{i}>" for i in range(rows - len(tokens))]
    spec.config.bos_token = bos if bos is not None else (eos or tokens[0])
    spec.config.eos_token = eos if eos is not None else tokens[0]
    spec.config.unk_token = unk if unk is not None else ""
    spec.config.layer_norm_epsilon = float(
        source.require(f"{arch}.attention.layer_norm_rms_epsilon")
    )
    if kept is None:
        spec.register_vocabulary(tokens)
    else:
        _keep_rows(spec.decoder, kept)
        spec.register_vocabulary([tokens[i] for i in kept])
    # The decoder layers and the int8 vocabulary matrices are quantized already; the rest
    # goes through what spec.optimize() does: alias equal variables (tied embeddings), then
    # quantize.
    quantized = _install_quantized_rows(spec.decoder)
    _quantize(spec, quantization,
              done=lambda name: name.startswith("decoder/layer_") or name in quantized)
    try:
        spec.save(str(out))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"CTranslate2 rejected the converted model: {exc}") from exc
    for name, content in tokenizer_files.items():
        (out / name).write_bytes(content)
    if kept is not None:
        write_kept(out, kept, len(vocab.tokens))
    elif calibration is not None:  # a pruned model reads other ids: nothing to compare
        write_reference(out, calibration.held_out_ids, calibration.reference_top1)

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
        source_sha256=sha256_file(source.path),
        pruned_from=None if kept is None else len(vocab.tokens),
        repetition_penalty=repetition_penalty,
    )
    info.save(out)
    return info


def _quantize(layer: Any, quantization: str,
              done: Callable[[str], bool] | None = None) -> None:
    """Validate and quantize one CTranslate2 layer spec (or the whole model) in place.

    Layer by layer, the import holds one layer's float32 weights at a time instead of the
    whole model's. These are ctranslate2.specs' own steps behind spec.optimize(), called on
    a part (`_alias_variables` only for the whole model, where tied embeddings live);
    `done` names the variables an earlier call quantized, which must not be quantized twice.
    """
    try:
        layer.validate()  # also converts Python values to the arrays quantizing expects
        if done is not None:
            layer._alias_variables()
        layer._quantize(quantization, None if done is None else lambda n: not done(n))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"CTranslate2 rejected the converted model: {exc}") from exc


def _pruned_tokenizer(vocab: GGUFVocab, files: dict[str, bytes], prune: VocabPruning
                      ) -> tuple[list[int], dict[str, bytes]]:
    """The ids to keep, and tokenizer files that can produce only those."""
    counts: list[int] = []
    if prune.corpus:
        encode = Tokenizer.from_files(files).encode
        for text in prune.corpus:
            # Pieces, so a long corpus never needs its whole token list at once.
            for start in range(0, len(text), 100_000):
                counts += encode(text[start:start + 100_000])
    kept = kept_ids(vocab, prune.size, counts)
    return kept, build_tokenizer_files(restrict(vocab, kept))


def _keep_rows(decoder: Any, kept: list[int]) -> None:
    """Only the kept rows of the embedding table and the LM head (one array when tied)."""
    rows = np.asarray(kept)
    embeddings = decoder.embeddings.weight
    tied = decoder.projection.weight is embeddings
    decoder.embeddings.weight = _take_rows(embeddings, rows)
    decoder.projection.weight = (decoder.embeddings.weight if tied
                                 else _take_rows(decoder.projection.weight, rows))
    bias = getattr(decoder.projection, "bias", None)
    if isinstance(bias, np.ndarray) and bias.shape[:1] == embeddings.shape[:1]:
        decoder.projection.bias = np.ascontiguousarray(bias[rows])


def _take_rows(weight: Any, rows: npt.NDArray[np.intp]) -> Any:
    if isinstance(weight, QuantizedRows):
        return weight.take(rows)
    return np.ascontiguousarray(weight[rows])


def _install_quantized_rows(decoder: Any) -> set[str]:
    """Put int8 vocabulary matrices into the spec as ctranslate2.specs would have left them,
    and name the variables the final quantization must then leave alone."""
    embeddings, projection = decoder.embeddings, decoder.projection
    tied = projection.weight is embeddings.weight
    done: set[str] = set()
    for name, layer in (("embeddings", embeddings), ("projection", projection)):
        rows = layer.weight
        if not isinstance(rows, QuantizedRows):
            continue
        if layer is projection and tied:
            # The same int8 array, which the final pass aliases to the embeddings', and no
            # scale of its own: what CTranslate2 writes for a tied model.
            layer.weight = embeddings.weight
        else:
            layer.weight, layer.weight_scale = rows.values, rows.scales
        done.add(f"decoder/{name}/weight")
    return done


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
        # llama.cpp prefixes SentencePiece text with a space unless the GGUF says not to.
        add_space_prefix=bool(source.get("tokenizer.ggml.add_space_prefix", True)),
        unk_id=_optional_id(source, "tokenizer.ggml.unknown_token_id"),
        bos_id=_optional_id(source, "tokenizer.ggml.bos_token_id"),
        eos_id=_optional_id(source, "tokenizer.ggml.eos_token_id"),
        pad_id=_optional_id(source, "tokenizer.ggml.padding_token_id"),
    )


def _optional_id(source: _GGUF, key: str) -> int | None:
    value = source.get(key)
    return None if value is None else int(value)


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

