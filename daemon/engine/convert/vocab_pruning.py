"""Opt-in vocabulary pruning at import: a smaller LM head, so every decoded token reads less.

A small model spends much of each decoding step in its LM head, one row per vocabulary entry:
Gemma 3 270M's 262,144 rows are 62% of its weights, Qwen2.5's 151,936 about a quarter, SmolLM2's
49,152 a fifth. Most of those entries are pieces of scripts and languages a given user never
writes. Pruning keeps `size` of them and drops the rest from the embedding table and the LM head.

Which entries stay:
- every control, user-defined, unknown and byte token, and for byte-level BPE every single
  character (one per byte value), so every text still encodes;
- with a corpus, the tokens that corpus uses, most frequent first (and, for BPE, every token a
  kept one is merged from);
- then the earliest merges, to fill up to `size`: BPE vocabularies are learned most frequent
  pair first, so a merge's rank is the model's own measure of how common its token is in the
  training data (for SentencePiece, the piece score plays that part).

The tokenizer is then kept from producing what was dropped, so the model never sees an id it
has no row for:
- byte-level BPE: merges whose result was dropped are removed. A merge that is applied when
  tokenizing covered text is always an ancestor of a kept token, so covered text tokenizes
  exactly as before; other text falls back to the smaller pieces it is made of;
- SentencePiece: dropped pieces become UNUSED. SentencePiece's BPE still merges through them and
  then splits an UNUSED result back into the two pieces it was made of, so covered text again
  tokenizes exactly as before.

The tokenizer files keep the original ids; `kept-tokens.json` lists the kept original ids in
model order, and the run-time `Tokenizer` maps between the two (see `RemappedBackend` and
`read_kept` in tokenizer.py). The quality cost is
measured on held-out text by `bench/prune_bench.py` (perplexity and top-1 agreement against the
unpruned model) and written to docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import ModelError
from ..tokenizer import KEPT_FILE
from .gguf_vocab import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    GGUFVocab,
)

MIN_SIZE = 1024
_ALWAYS = (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN, TOKEN_BYTE)


def _merge_parents(vocab: GGUFVocab) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """For byte-level BPE: what each token is merged from, and the rank of that merge."""
    parents: dict[str, tuple[str, str]] = {}
    rank: dict[str, int] = {}
    for i, merge in enumerate(vocab.merges):
        left, sep, right = merge.partition(" ")
        if not sep:
            raise ModelError(f"The GGUF has a malformed BPE merge {merge!r}; the file is damaged.")
        result = left + right
        if result not in rank:
            parents[result] = (left, right)
            rank[result] = i
    return parents, rank


def kept_ids(vocab: GGUFVocab, size: int, corpus_ids: Iterable[int] = ()) -> list[int]:
    """The original ids to keep, ascending (see the module docstring for the rule)."""
    n = len(vocab.tokens)
    if size < MIN_SIZE:
        raise ModelError(f"A pruned vocabulary needs at least {MIN_SIZE} tokens; {size} asked.")
    byte_level = vocab.model == "gpt2"
    first_id: dict[str, int] = {}
    for i, token in enumerate(vocab.tokens):
        first_id.setdefault(token, i)
    keep: dict[int, None] = {}  # insertion-ordered set
    for i, (token, kind) in enumerate(zip(vocab.tokens, vocab.token_types, strict=True)):
        if kind in _ALWAYS or (byte_level and len(token) == 1):
            keep[i] = None
    if len(keep) > size:
        raise ModelError(
            f"This vocabulary has {len(keep)} special, byte and single-character tokens, all "
            f"of which must stay; ask for at least {len(keep)} (or more, for useful coverage)."
        )
    parents, rank = _merge_parents(vocab) if byte_level else ({}, {})

    def parts(token: str) -> Iterable[str]:
        if byte_level:
            # What it is merged from, so the BPE tokenizer can still reach it.
            return parents.get(token, ())
        # SentencePiece: each of its characters alone, so a character the kept pieces know
        # is never spelled in bytes (single characters score last in SentencePiece BPE).
        return set(token) if len(token) > 1 else ()

    def add(token_id: int) -> None:
        pending = [token_id]
        while pending:
            i = pending.pop()
            if i in keep:
                continue
            keep[i] = None
            for part in parts(vocab.tokens[i]):
                if (j := first_id.get(part)) is not None:
                    pending.append(j)

    for token_id, _count in collections.Counter(corpus_ids).most_common():
        if len(keep) >= size:
            break
        if 0 <= token_id < n:
            add(token_id)
    if byte_level:
        # Merge order; tokens no merge produces (and no special type keeps) are unreachable.
        order = sorted((r, first_id[t]) for t, r in rank.items() if t in first_id)
        fill = [i for _r, i in order]
    else:
        scores = vocab.scores or [0.0] * n
        fill = sorted((i for i in range(n) if vocab.token_types[i] == TOKEN_NORMAL),
                      key=lambda i: (-scores[i], i))
    for token_id in fill:
        if len(keep) >= size:
            break
        add(token_id)
    return sorted(keep)


def restrict(vocab: GGUFVocab, kept: list[int]) -> GGUFVocab:
    """The same vocabulary (same ids), with a tokenizer that can only produce `kept` ids."""
    keep = set(kept)
    if vocab.model == "gpt2":
        present = {vocab.tokens[i] for i in kept}
        merges = [m for m in vocab.merges if m.replace(" ", "", 1) in present]
        return dataclasses.replace(vocab, merges=merges)
    types = [kind if i in keep else TOKEN_UNUSED for i, kind in enumerate(vocab.token_types)]
    return dataclasses.replace(vocab, token_types=types)


def write_kept(model_dir: Path, kept: list[int], original_size: int) -> None:
    document = {"original_size": original_size, "kept": kept}
    (model_dir / KEPT_FILE).write_text(json.dumps(document, separators=(",", ":")) + "\n",
                                       encoding="utf-8")
