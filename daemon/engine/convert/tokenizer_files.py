"""Tokenizer files rebuilt from a GGUF file's vocabulary, for the run-time tokenizer to read.

A GGUF file carries its vocabulary as plain lists (tokens, token types, merges, scores).
Byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`: SmolLM2, Llama 3, Qwen) become a
`tokenizer.json` for the `tokenizers` library; SentencePiece vocabularies (`"llama"`: Gemma)
become a SentencePiece `tokenizer.model` (sentencepiece_model.py).
"""

from __future__ import annotations

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

from ..errors import ModelError, UnsupportedModelError
from ..tokenizer import TOKENIZER_FILE
from .gguf_vocab import TOKEN_CONTROL, TOKEN_USER_DEFINED, GGUFVocab
from .sentencepiece_model import build_sentencepiece_files

# The split regexes llama.cpp applies before byte-level BPE, keyed by `tokenizer.ggml.pre`.
# They come from the models' own tokenizer.json files; a wrong one silently changes how
# numbers and punctuation are tokenized, so unknown names fall back to GPT-2's with care.
_GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in ("smollm", "starcoder", "refact"):
        # SmolLM2's tokenizer.json: digits one by one, then GPT-2 byte-level splitting.
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    regex = {
        "llama-bpe": _LLAMA3_SPLIT,
        "llama3": _LLAMA3_SPLIT,
        "qwen2": _QWEN2_SPLIT,
        "deepseek-r1-qwen": _QWEN2_SPLIT,
    }.get(pre)
    if regex is None:
        if pre not in ("default", "gpt-2", "gpt2", ""):
            raise UnsupportedModelError(
                f"The GGUF uses the byte-level pre-tokenizer {pre!r}, which Hush does not "
                "know yet (known: smollm, llama-bpe, qwen2, gpt-2). Use a GGUF of a supported "
                "model family."
            )
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_tokenizer_files(vocab: GGUFVocab) -> dict[str, bytes]:
    """The tokenizer files (name -> content) to write into the model directory."""
    if vocab.model == "llama":
        return build_sentencepiece_files(vocab)
    return {TOKENIZER_FILE: build_tokenizer_json(vocab).encode("utf-8")}


def build_tokenizer_json(vocab: GGUFVocab) -> str:
    """Return a `tokenizer.json` document equivalent to a byte-level BPE GGUF vocabulary."""
    if vocab.model == "gpt2":
        return _build_byte_level_bpe(vocab).to_str()
    raise UnsupportedModelError(
        f"Unsupported tokenizer type {vocab.model!r} in the GGUF (tokenizer.ggml.model). "
        "Hush supports 'gpt2' (byte-level BPE) and 'llama' (SentencePiece) vocabularies."
    )


def _build_byte_level_bpe(vocab: GGUFVocab) -> tokenizers.Tokenizer:
    ids: dict[str, int] = {}
    for i, token in enumerate(vocab.tokens):
        # Some GGUFs repeat a padding string; the first id is the one text maps to.
        ids.setdefault(token, i)
    merges: list[tuple[str, str]] = []
    for merge in vocab.merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise ModelError(f"The GGUF has a malformed BPE merge {merge!r}; the file is damaged.")
        merges.append((left, right))
    tok = tokenizers.Tokenizer(
        models.BPE(vocab=ids, merges=merges, fuse_unk=False, byte_fallback=False)
    )
    tok.pre_tokenizer = _byte_level_pre_tokenizer(vocab.pre)
    tok.decoder = decoders.ByteLevel()
    added = [
        AddedToken(
            token,
            special=kind == TOKEN_CONTROL,
            normalized=False,
            single_word=False,
            lstrip=False,
            rstrip=False,
        )
        for token, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    ]
    tok.add_tokens(added)
    return tok
