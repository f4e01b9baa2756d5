"""A tiny random-weight model for fast tests of everything around the engine.

It goes through the same files as an imported model (CTranslate2 model, tokenizer.json,
hush-model.json), so `Engine.load` treats it like a real one. Its output is gibberish.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..model_info import ModelInfo
from ..tokenizer import TOKENIZER_FILE, byte_decoder
from .gguf_vocab import TOKEN_CONTROL, TOKEN_NORMAL, GGUFVocab
from .tokenizer_files import build_tokenizer_json

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tiny_model(
    dest: Path, *, seed: int = 0, quantization: str = "int8", context_length: int = 512
) -> Path:
    """Write a loadable 2-layer, 64-wide llama-style model to `dest` (created) and return it.

    Rotary positions put no bound on the context; a large `context_length` lets daemon tests
    run generations long enough to interrupt.
    """
    from ctranslate2.specs import TransformerDecoderModelSpec, common_spec

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    # Specials first (ids 0-2, like SmolLM2), then the 256 GPT-2 byte characters, so any text
    # can be encoded without merges.
    byte_chars = sorted(byte_decoder(), key=lambda c: byte_decoder()[c])
    tokens = [*_SPECIALS, *byte_chars]
    types = [TOKEN_CONTROL] * len(_SPECIALS) + [TOKEN_NORMAL] * len(byte_chars)
    vocab = GGUFVocab("gpt2", "default", tokens, types, merges=[], scores=[])

    layers, heads, kv_heads, hidden, ffn = 2, 4, 2, 64, 128
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def w(rows: int, cols: int) -> npt.NDArray[np.float32]:
        scaled: npt.NDArray[np.float64] = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        return scaled.astype(np.float32)

    spec = TransformerDecoderModelSpec.from_config(
        layers,
        heads,
        activation=common_spec.Activation.SWISH,
        pre_norm=True,
        ffn_glu=True,
        rms_norm=True,
        rotary_dim=0,
        rotary_interleave=False,
        num_heads_kv=kv_heads,
    )
    dec = spec.decoder
    dec.scale_embeddings = False
    dec.embeddings.weight = w(len(tokens), hidden)
    dec.projection.weight = dec.embeddings.weight
    dec.layer_norm.gamma = np.ones(hidden, np.float32)
    for layer in dec.layer:
        layer.self_attention.layer_norm.gamma = np.ones(hidden, np.float32)
        layer.ffn.layer_norm.gamma = np.ones(hidden, np.float32)
        layer.self_attention.linear[0].weight = w(hidden + 2 * kv_heads * head_dim, hidden)
        layer.self_attention.linear[1].weight = w(hidden, hidden)
        layer.ffn.linear_0.weight = w(ffn, hidden)
        layer.ffn.linear_0_noact.weight = w(ffn, hidden)
        layer.ffn.linear_1.weight = w(hidden, ffn)
    spec.register_vocabulary(tokens)
    spec.config.bos_token = "<|im_start|>"
    spec.config.eos_token = "<|im_end|>"
    spec.config.unk_token = "<|endoftext|>"
    spec.config.layer_norm_epsilon = 1e-5
    spec.validate()
    spec.optimize(quantization=quantization)
    spec.save(str(dest))

    (dest / TOKENIZER_FILE).write_text(build_tokenizer_json(vocab), encoding="utf-8")
    ModelInfo(
        architecture="llama",
        parameter_count=int(
            len(tokens) * hidden
            + layers * (hidden * (hidden + 2 * kv_heads * head_dim) + hidden * hidden)
            + layers * 3 * hidden * ffn
        ),
        context_length=context_length,
        quantization=quantization,
        chat_template=TINY_CHAT_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        end_of_turn_tokens=("<|im_end|>", "<|endoftext|>"),
        add_bos=False,
        source_sha256="0" * 64,
    ).save(dest)
    return dest
