"""SentencePiece vocabularies (GGUF `tokenizer.ggml.model == "llama"`: Gemma, Llama 2, Mistral).

The importer wrote the GGUF's vocabulary as a SentencePiece `tokenizer.model`
(convert/sentencepiece_model.py). `SentencePieceBackend` reproduces llama.cpp's SPM
tokenization, which is what the GGUF's model was used with: control and user-defined tokens
are cut out of the text first (longest first), each remaining fragment goes through
SentencePiece's BPE, and the optional space prefix is added to fragments that start the text
or follow a cut-out token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import sentencepiece

from .errors import ModelError

SENTENCEPIECE_FILE = "tokenizer.model"
SENTENCEPIECE_OPTIONS_FILE = "hush-tokenizer.json"

_SPACE = "\u2581"  # SentencePiece's visible space


def load_processor(model: bytes) -> sentencepiece.SentencePieceProcessor:
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=model)
    except (RuntimeError, OSError) as exc:
        raise ModelError(
            f"SentencePiece cannot load the rebuilt vocabulary ({exc}). Import the model "
            "again; if that fails the GGUF's vocabulary is damaged."
        ) from exc


class SentencePieceBackend:
    """Tokenizer backend for SentencePiece vocabularies, matching llama.cpp's SPM tokenizer."""

    def __init__(
        self, model: bytes, *, add_space_prefix: bool, user_defined: Iterable[int] = ()
    ) -> None:
        self._sp = load_processor(model)
        self._add_space_prefix = add_space_prefix
        size = int(self._sp.get_piece_size())
        self.vocab_size = size
        self.special_tokens: dict[str, int] = {}
        self._user_defined: dict[int, str] = {}
        for i in range(size):
            if self._sp.is_control(i) or self._sp.is_unknown(i):
                self.special_tokens.setdefault(self._sp.id_to_piece(i), i)
        special_ids = set(self.special_tokens.values())
        for i in user_defined:
            if 0 <= i < size and i not in special_ids:
                self._user_defined[i] = self._sp.id_to_piece(i)
        # Cut-out tokens, longest first as llama.cpp does; by text, first id wins.
        self._cut_ids: dict[str, int] = {}
        for token, token_id in (*self.special_tokens.items(),
                                *((t, i) for i, t in self._user_defined.items())):
            self._cut_ids.setdefault(token, token_id)
        self._cut_order = sorted(self._cut_ids, key=len, reverse=True)

    @classmethod
    def load(cls, model_dir: Path) -> SentencePieceBackend:
        model_path = model_dir / SENTENCEPIECE_FILE
        options_path = model_dir / SENTENCEPIECE_OPTIONS_FILE
        try:
            options = json.loads(options_path.read_text(encoding="utf-8"))
            return cls(
                model_path.read_bytes(),
                add_space_prefix=bool(options["add_space_prefix"]),
                user_defined=[int(i) for i in options["user_defined"]],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(
                f"{model_dir} has a damaged SentencePiece tokenizer ({exc}). Import the model "
                "again from its GGUF file."
            ) from exc

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        prev_cut = True
        for fragment, cut_id in _partition(text, self._cut_order, self._cut_ids):
            if cut_id is not None:
                ids.append(cut_id)
                prev_cut = True
                continue
            if self._add_space_prefix and prev_cut:
                fragment = " " + fragment
            ids.extend(int(i) for i in self._sp.encode(fragment))
            prev_cut = False
        return ids

    def id_to_token(self, token_id: int) -> str | None:
        if not 0 <= token_id < self.vocab_size:
            return None
        return str(self._sp.id_to_piece(token_id))

    def token_to_id(self, token: str) -> int | None:
        token_id = int(self._sp.piece_to_id(token))
        return token_id if self._sp.id_to_piece(token_id) == token else None

    def piece_bytes(self, token_id: int) -> bytes:
        if token_id in self._user_defined:
            return self._user_defined[token_id].encode("utf-8")
        piece = str(self._sp.id_to_piece(token_id))
        if self._sp.is_byte(token_id):
            return bytes([int(piece[3:5], 16)])
        return piece.replace(_SPACE, " ").encode("utf-8")


def _partition(
    text: str, order: list[str], ids: dict[str, int]
) -> Iterable[tuple[str, int | None]]:
    """Split text into (fragment, None) and (token, id) pieces for tokens cut out whole."""
    present = tuple(t for t in order if t in text)
    if not present:
        if text:
            yield text, None
        return
    pattern = _alternation(present)
    pos = 0
    for match in pattern.finditer(text):
        if match.start() > pos:
            yield text[pos : match.start()], None
        yield match.group(), ids[match.group()]
        pos = match.end()
    if pos < len(text):
        yield text[pos:], None


@lru_cache(maxsize=256)
def _alternation(tokens: tuple[str, ...]) -> re.Pattern[str]:
    # Longest alternatives first, so the leftmost match is also the longest there.
    return re.compile("|".join(re.escape(t) for t in tokens))
