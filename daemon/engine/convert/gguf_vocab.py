"""The vocabulary part of a GGUF file, as the importer's modules share it.

A leaf: the tokenizer builders (tokenizer_files.py, sentencepiece_model.py), vocabulary pruning
and the tiny test model all take a `GGUFVocab`, and none of them imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass

# GGUF token types (gguf.TokenType); repeated here so that only reading a GGUF needs gguf.
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer part of a GGUF file's metadata."""

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    scores: list[float]
    # SentencePiece vocabularies need these; byte-level BPE ignores them.
    add_space_prefix: bool = False  # tokenizer.ggml.add_space_prefix
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
