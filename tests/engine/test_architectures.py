"""Every architecture path of the GGUF importer, on tiny synthetic GGUF files (milliseconds).

Each file is written with gguf.GGUFWriter the way llama.cpp's converter writes real models
(llama Q/K rows permuted, gemma norms stored as 1 + w, biases, tied or untied heads), with
random weights. The tests check what a user would notice: the import succeeds and the model
generates, the weights landed where CTranslate2 expects them, or the error names the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
import pytest

from hush.daemon.engine.convert.architectures import build_decoder_spec
from hush.daemon.engine.convert.gguf_import import _GGUF, import_gguf
from hush.daemon.engine.errors import ModelError, UnsupportedModelError
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.model_info import ModelInfo
from hush.daemon.engine.tokenizer import byte_decoder

F32 = npt.NDArray[np.float32]

LAYERS, HEADS, KV_HEADS, HIDDEN, FFN = 2, 4, 2, 32, 48
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Synthetic:
    """A tiny model's tensors and metadata, written as GGUF by `write`."""

    arch: str
    head_dim: int = HIDDEN // HEADS
    seed: int = 0
    tokenizer_pre: str | None = None  # default: what the architecture's models use
    tensors: dict[str, F32] = field(default_factory=dict)
    tensor_types: dict[str, gguf.GGMLQuantizationType] = field(default_factory=dict)
    extra: list[Callable[[gguf.GGUFWriter], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def w(self, *shape: int) -> F32:
        values: npt.NDArray[np.float64] = self.rng.standard_normal(shape) / np.sqrt(shape[-1])
        return values.astype(np.float32)


def _byte_level_vocab() -> tuple[list[str], list[int]]:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    table = byte_decoder()
    chars = sorted(table, key=lambda c: table[c])
    return specials + chars, [3] * len(specials) + [1] * len(chars)


# SentencePiece vocabulary for the gemma3 files: controls, one user-defined token, the 256
# byte pieces and a few merges' worth of pieces ("▁hello" and "▁world" in two steps each).
_SP_CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
_SP_PIECES = {
    "\u2581": -1.0, "h": -2.0, "e": -2.0, "l": -2.0, "o": -2.0, "w": -2.0, "r": -2.0,
    "d": -2.0, "he": -3.0, "ll": -3.0, "hell": -4.0, "hello": -5.0, "\u2581hello": -6.0,
    "wo": -3.0, "rl": -3.0, "worl": -4.0, "world": -5.0, "\u2581world": -6.0,
}


def _sentencepiece_vocab() -> tuple[list[str], list[int], list[float]]:
    tokens = [*_SP_CONTROL, "\n"]
    types = [3] * len(_SP_CONTROL) + [4]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    tokens += list(_SP_PIECES)
    types += [1] * len(_SP_PIECES)
    scores = [0.0] * (len(_SP_CONTROL) + 1 + 256) + list(_SP_PIECES.values())
    return tokens, types, scores


def _llama_cpp_permute(weights: F32, heads: int) -> F32:
    """What llama.cpp's convert_hf_to_gguf.py does to llama Q/K weights."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def make_model(arch: str, *, tied: bool = True, seed: int = 0) -> Synthetic:
    m = Synthetic(arch, head_dim=16 if arch == "gemma3" else HIDDEN // HEADS, seed=seed)
    n_vocab = len(_sentencepiece_vocab()[0] if arch == "gemma3" else _byte_level_vocab()[0])
    embeddings = m.w(n_vocab, HIDDEN)
    embeddings[:7] = 0.0  # control tokens never win the argmax: generations run full length
    m.tensors["token_embd.weight"] = embeddings
    if not tied:
        head = m.w(n_vocab, HIDDEN)
        head[:7] = 0.0
        m.tensors["output.weight"] = head
    m.tensors["output_norm.weight"] = 1.0 + 0.1 * m.w(1, HIDDEN)[0]
    q_rows, kv_rows = HEADS * m.head_dim, KV_HEADS * m.head_dim
    for i in range(LAYERS):
        p = f"blk.{i}."
        m.tensors[p + "attn_norm.weight"] = 1.0 + 0.1 * m.w(1, HIDDEN)[0]
        m.tensors[p + "ffn_norm.weight"] = 1.0 + 0.1 * m.w(1, HIDDEN)[0]
        m.tensors[p + "attn_q.weight"] = m.w(q_rows, HIDDEN)
        m.tensors[p + "attn_k.weight"] = m.w(kv_rows, HIDDEN)
        m.tensors[p + "attn_v.weight"] = m.w(kv_rows, HIDDEN)
        m.tensors[p + "attn_output.weight"] = m.w(HIDDEN, q_rows)
        m.tensors[p + "ffn_gate.weight"] = m.w(FFN, HIDDEN)
        m.tensors[p + "ffn_up.weight"] = m.w(FFN, HIDDEN)
        m.tensors[p + "ffn_down.weight"] = m.w(HIDDEN, FFN)
        if arch == "qwen2":
            for x, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
                m.tensors[p + f"attn_{x}.bias"] = m.w(1, rows)[0]
        if arch == "gemma3":
            for name, size in (("post_attention_norm", HIDDEN), ("post_ffw_norm", HIDDEN),
                               ("attn_q_norm", m.head_dim), ("attn_k_norm", m.head_dim)):
                m.tensors[p + f"{name}.weight"] = 1.0 + 0.1 * m.w(1, size)[0]
    return m


def write(m: Synthetic, path: Path) -> Path:
    """Write `m` as llama.cpp would (Q/K permuted for llama) and return the path."""
    writer = gguf.GGUFWriter(str(path), m.arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    if m.arch == "gemma3":
        writer.add_key_length(m.head_dim)
        writer.add_value_length(m.head_dim)
        writer.add_rope_freq_base(1_000_000.0)
        writer.add_sliding_window(8)
        tokens, types, scores = _sentencepiece_vocab()
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_scores(scores)
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(False)
    else:
        tokens, types = _byte_level_vocab()
        writer.add_rope_freq_base(1_000_000.0 if m.arch == "qwen2" else 10_000.0)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(m.tokenizer_pre or ("qwen2" if m.arch == "qwen2" else "default"))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges([])
        writer.add_eos_token_id(2)
        writer.add_bos_token_id(0)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHATML)
    for extra in m.extra:
        extra(writer)
    for name, value in m.tensors.items():
        if m.arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            value = _llama_cpp_permute(value, HEADS if "attn_q" in name else KV_HEADS)
        kind = m.tensor_types.get(name)
        if kind is None:
            writer.add_tensor(name, value)
        else:  # stored quantized or as another raw type
            data = value if kind == gguf.GGMLQuantizationType.I32 else gguf.quants.quantize(
                value, kind)
            writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def spec_of(path: Path, arch: str) -> Any:
    return build_decoder_spec(_GGUF(path), arch)[0]


def generate(model_dir: Path, text: str, n: int = 6) -> tuple[Engine, int]:
    engine = Engine.load(model_dir, intra_threads=1)
    ids = engine.tokenizer.encode(text)
    if engine.info.add_bos and engine.bos_id is not None:
        ids.insert(0, engine.bos_id)
    generation = engine.stream(ids, GenerationOptions(max_tokens=n))
    "".join(generation)
    return engine, int(generation.completion_tokens)


# --- architectures that import and run ------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_import_loads_and_generates(tmp_path: Path, arch: str, tied: bool) -> None:
    src = write(make_model(arch, tied=tied), tmp_path / f"{arch}.gguf")
    info = import_gguf(src, tmp_path / "model")
    assert info.architecture == arch
    assert info.context_length == 256
    _, produced = generate(tmp_path / "model", "hello world", n=6)
    assert produced == 6


def test_llama_qk_permutation_is_undone_and_head_untied(tmp_path: Path) -> None:
    m = make_model("llama", tied=False)
    spec = spec_of(write(m, tmp_path / "l.gguf"), "llama")
    qkv = spec.decoder.layer[1].self_attention.linear[0].weight
    expected = np.concatenate([m.tensors[f"blk.1.attn_{x}.weight"] for x in "qkv"])
    np.testing.assert_allclose(qkv, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(spec.decoder.projection.weight, m.tensors["output.weight"],
                               rtol=1e-3, atol=1e-3)
    assert spec.decoder.scale_embeddings is False


def test_llama_linear_rope_scaling(tmp_path: Path) -> None:
    m = make_model("llama")
    m.extra.append(lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR))
    m.extra.append(lambda w: w.add_rope_scaling_factor(4.0))
    path = write(m, tmp_path / "l.gguf")
    attn = spec_of(path, "llama").decoder.layer[0].self_attention
    assert int(attn.rotary_scaling_type) == 0  # RotaryScalingType.Linear
    assert float(attn.rotary_scaling_factor) == 4.0
    import_gguf(path, tmp_path / "model")
    assert generate(tmp_path / "model", "abc")[1] == 6


def _llama3_rope_freqs(head_dim: int, theta: float, factor: float, original: int) -> F32:
    # Meta's Llama 3.1 rule as llama.cpp's converter writes it (low 1, high 4).
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    smooth = (original / wavelen - 1.0) / 3.0
    out = np.where(wavelen < original / 4, 1.0,
                   np.where(wavelen > original, factor, 1.0 / ((1 - smooth) / factor + smooth)))
    return out.astype(np.float32)


def test_llama3_rope_frequency_factors(tmp_path: Path) -> None:
    m = make_model("llama")
    m.tensors["rope_freqs.weight"] = _llama3_rope_freqs(HIDDEN // HEADS, 10_000.0, 8.0, 64)
    m.extra.append(lambda w: w.add_rope_scaling_orig_ctx_len(64))
    path = write(m, tmp_path / "l.gguf")
    attn = spec_of(path, "llama").decoder.layer[0].self_attention
    assert int(attn.rotary_scaling_type) == 2  # RotaryScalingType.Llama3
    assert float(attn.rotary_scaling_factor) == 8.0
    import_gguf(path, tmp_path / "model")
    assert generate(tmp_path / "model", "abc")[1] == 6


def test_qwen2_biases_and_no_permutation(tmp_path: Path) -> None:
    m = make_model("qwen2")
    attn = spec_of(write(m, tmp_path / "q.gguf"), "qwen2").decoder.layer[0].self_attention
    expected_w = np.concatenate([m.tensors[f"blk.0.attn_{x}.weight"] for x in "qkv"])
    expected_b = np.concatenate([m.tensors[f"blk.0.attn_{x}.bias"] for x in "qkv"])
    np.testing.assert_allclose(attn.linear[0].weight, expected_w, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(attn.linear[0].bias, expected_b, rtol=1e-6)
    assert float(attn.rotary_base) == 1_000_000.0


def test_qwen2_without_biases_names_the_missing_tensor(tmp_path: Path) -> None:
    m = make_model("qwen2")
    del m.tensors["blk.1.attn_v.bias"]
    with pytest.raises(ModelError, match=r"blk\.1\.attn_v\.bias"):
        import_gguf(write(m, tmp_path / "q.gguf"), tmp_path / "model")


def test_gemma3_layers_norms_and_embeddings(tmp_path: Path) -> None:
    m = make_model("gemma3", seed=3)
    m.extra.append(lambda w: w.add_sliding_window_pattern(2))  # layer 1 global, layer 0 local
    spec = spec_of(write(m, tmp_path / "g.gguf"), "gemma3")
    local, global_ = (layer.self_attention for layer in spec.decoder.layer)
    assert (int(local.sliding_window), float(local.rotary_base)) == (8, 10_000.0)
    assert (int(global_.sliding_window), float(global_.rotary_base)) == (0, 1_000_000.0)
    layer = spec.decoder.layer[1]
    for norm, stored in (
        (layer.input_layer_norm, "attn_norm"),
        (layer.post_attention_layer_norm, "post_attention_norm"),
        (layer.pre_feedforward_layer_norm, "ffn_norm"),
        (layer.post_feedforward_layer_norm, "post_ffw_norm"),
        (layer.self_attention.q_norm, "attn_q_norm"),
        (layer.self_attention.k_norm, "attn_k_norm"),
    ):
        # Stored as 1 + w; CTranslate2 gets w and adds the 1 back (layer_norm_use_residual).
        np.testing.assert_allclose(norm.gamma + 1.0, m.tensors[f"blk.1.{stored}.weight"],
                                   rtol=1e-6)
        assert norm.layer_norm_use_residual is True
    assert spec.decoder.scale_embeddings is True
    assert int(global_.head_dim) == 16  # from gemma3.attention.key_length, not hidden/heads
    assert spec.decoder.projection.weight is spec.decoder.embeddings.weight  # tied


def test_gemma3_default_pattern_every_sixth_layer_is_global(tmp_path: Path) -> None:
    from hush.daemon.engine.convert.architectures import HyperParameters, _gemma3_sliding_layers

    path = write(make_model("gemma3"), tmp_path / "g.gguf")
    hp = HyperParameters.read(_GGUF(path), "gemma3")
    hp = HyperParameters(**{**hp.__dict__, "n_layers": 18})
    sliding = _gemma3_sliding_layers(_GGUF(path), hp)
    assert [i for i, s in enumerate(sliding) if not s] == [5, 11, 17]


def test_gemma3_base_model_runs_in_completion_mode(tmp_path: Path) -> None:
    import_gguf(write(make_model("gemma3"), tmp_path / "g.gguf"), tmp_path / "model")
    info = ModelInfo.load(tmp_path / "model")
    assert info.chat_template is None  # a base model: the engine uses plain completion
    assert info.add_bos and info.bos_token == "<bos>"
    assert {"<eos>", "<end_of_turn>"} <= set(info.end_of_turn_tokens)
    engine, produced = generate(tmp_path / "model", "hello world\n", n=5)
    assert produced == 5
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"tokenizer.model", "model.bin", "hush-model.json"} <= names
    tok = engine.tokenizer
    # SentencePiece BPE by score, no space prefix (Gemma 3), "\n" cut out whole, bytes kept.
    ids = tok.encode("hello world\n")
    assert [tok.id_to_token(i) for i in ids] == ["hello", "\u2581world", "\n"]
    text = "<start_of_turn>hello é😀"
    ids = tok.encode(text)
    assert ids[0] == tok.special_tokens["<start_of_turn>"]
    assert tok.decode(ids) == "hello é😀"
    assert tok.decode(ids, skip_special=False) == text


def test_quantized_tensors_are_dequantized(tmp_path: Path) -> None:
    m = make_model("qwen2")
    m.tensor_types["blk.0.ffn_up.weight"] = gguf.GGMLQuantizationType.Q8_0
    spec = spec_of(write(m, tmp_path / "q.gguf"), "qwen2")
    np.testing.assert_allclose(spec.decoder.layer[0].ffn.linear_0_noact.weight,
                               m.tensors["blk.0.ffn_up.weight"], atol=0.02)


# --- what users see when a file cannot be imported ------------------------------------------


def test_missing_tensor_names_it(tmp_path: Path) -> None:
    m = make_model("gemma3")
    del m.tensors["blk.1.post_ffw_norm.weight"]
    with pytest.raises(ModelError, match=r"lacks the tensor 'blk\.1\.post_ffw_norm\.weight'"):
        import_gguf(write(m, tmp_path / "g.gguf"), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_unsupported_tensor_type_names_type_and_alternatives(tmp_path: Path) -> None:
    m = make_model("llama")
    m.tensors["blk.0.ffn_up.weight"] = np.ones((FFN, HIDDEN), np.int32)
    m.tensor_types["blk.0.ffn_up.weight"] = gguf.GGMLQuantizationType.I32
    with pytest.raises(UnsupportedModelError) as err:
        import_gguf(write(m, tmp_path / "l.gguf"), tmp_path / "model")
    message = str(err.value)
    assert "blk.0.ffn_up.weight" in message and "I32" in message
    assert "Q8_0" in message and "Q4_K" in message  # what to use instead
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("arch", ["mamba", "phi3", "gemma2"])
def test_unsupported_architecture_lists_supported(tmp_path: Path, arch: str) -> None:
    m = make_model("llama")
    m.arch = arch
    with pytest.raises(UnsupportedModelError) as err:
        import_gguf(write(m, tmp_path / "x.gguf"), tmp_path / "model")
    message = str(err.value)
    assert repr(arch) in message
    assert all(name in message for name in ("llama", "qwen2", "gemma3"))


def test_unsupported_rope_scaling_is_named(tmp_path: Path) -> None:
    m = make_model("qwen2")
    m.extra.append(lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN))
    with pytest.raises(UnsupportedModelError, match=r"'yarn' RoPE scaling.*linear"):
        import_gguf(write(m, tmp_path / "q.gguf"), tmp_path / "model")


def test_unknown_pre_tokenizer_is_named(tmp_path: Path) -> None:
    m = make_model("llama")
    m.tokenizer_pre = "chatglm-bpe"
    with pytest.raises(UnsupportedModelError, match=r"'chatglm-bpe'.*qwen2"):
        import_gguf(write(m, tmp_path / "l.gguf"), tmp_path / "model")


def test_sentencepiece_vocab_without_unknown_token(tmp_path: Path) -> None:
    m = make_model("gemma3")
    path = write(m, tmp_path / "g.gguf")
    from hush.daemon.engine.convert.gguf_import import _read_vocab
    from hush.daemon.engine.convert.tokenizer_files import build_tokenizer_files

    vocab = _read_vocab(_GGUF(path))
    types = [1 if t == 2 else t for t in vocab.token_types]
    broken = type(vocab)(**{**vocab.__dict__, "unk_id": None, "token_types": types})
    with pytest.raises(UnsupportedModelError, match="no unknown token"):
        build_tokenizer_files(broken)
