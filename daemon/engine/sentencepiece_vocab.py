"""SentencePiece vocabularies (GGUF `tokenizer.ggml.model == "llama"`: Gemma, Llama 2, Mistral).

At import the GGUF's tokens, scores and token types become a SentencePiece `ModelProto`
(BPE, byte fallback, identity normalizer) saved as `tokenizer.model`. The protobuf wire format
is written here directly: the message is small and fixed, and the `sentencepiece_model_pb2`
module sentencepiece ships would need the protobuf runtime as another dependency.

At run time `SentencePieceBackend` reproduces llama.cpp's SPM tokenization, which is what the
GGUF's model was used with: control and user-defined tokens are cut out of the text first
(longest first), each remaining fragment goes through SentencePiece's BPE, and the optional
space prefix is added to fragments that start the text or follow a cut-out token.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import sentencepiece

from .errors import ModelError, UnsupportedModelError
from .tokenizer import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    GGUFVocab,
)

SENTENCEPIECE_FILE = "tokenizer.model"
SENTENCEPIECE_OPTIONS_FILE = "hush-tokenizer.json"

_SPACE = "\u2581"  # SentencePiece's visible space
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")

# Field numbers from sentencepiece_model.proto.
_MODEL_PIECES, _MODEL_TRAINER, _MODEL_NORMALIZER = 1, 2, 3
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_MODEL_TYPE, _TRAINER_VOCAB_SIZE, _TRAINER_BYTE_FALLBACK = 3, 4, 35
_TRAINER_IDS = {"unk": (40, 45), "bos": (41, 46), "eos": (42, 47), "pad": (43, 48)}
_NORM_NAME, _NORM_DUMMY_PREFIX, _NORM_REMOVE_SPACES, _NORM_ESCAPE_SPACES = 1, 3, 4, 5
_MODEL_TYPE_BPE = 2
_SP_TYPES = {TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED,
             TOKEN_BYTE}


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # protobuf int32: negative numbers are 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _float_field(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def build_sentencepiece_model(vocab: GGUFVocab) -> bytes:
    """A serialized SentencePiece ModelProto equivalent to the GGUF's SPM vocabulary."""
    n = len(vocab.tokens)
    scores = vocab.scores or [0.0] * n
    if len(scores) != n:
        raise ModelError("The GGUF's token scores and tokens differ in length; the file is "
                         "damaged. Download it again.")
    types = [t if t in _SP_TYPES else TOKEN_NORMAL for t in vocab.token_types]
    unk = vocab.unk_id
    if unk is None:
        unk = next((i for i, t in enumerate(types) if t == TOKEN_UNKNOWN), None)
    if unk is None or not 0 <= unk < n:
        raise UnsupportedModelError(
            "This SentencePiece vocabulary has no unknown token (tokenizer.ggml."
            "unknown_token_id); Hush cannot rebuild its tokenizer. Use a GGUF made by a recent "
            "llama.cpp."
        )
    # SentencePiece wants exactly one UNKNOWN piece; GGUFs often mark <unk> as a control token.
    types = [TOKEN_CONTROL if t == TOKEN_UNKNOWN else t for t in types]
    types[unk] = TOKEN_UNKNOWN
    seen: set[str] = set()
    pieces = bytearray()
    for i, (token, score, kind) in enumerate(zip(vocab.tokens, scores, types, strict=True)):
        if not token or token in seen:
            # SentencePiece refuses empty and repeated pieces; such entries are padding.
            token = f"<hush_unused_{i}>"
            kind = TOKEN_UNUSED
        if kind == TOKEN_BYTE and not _BYTE_PIECE.fullmatch(token):
            kind = TOKEN_NORMAL
        seen.add(token)
        body = (
            _bytes_field(_PIECE_TEXT, token.encode("utf-8"))
            + _float_field(_PIECE_SCORE, score)
            + _int_field(_PIECE_TYPE, kind)
        )
        pieces += _bytes_field(_MODEL_PIECES, body)

    trainer = bytearray(_int_field(_TRAINER_MODEL_TYPE, _MODEL_TYPE_BPE))
    trainer += _int_field(_TRAINER_VOCAB_SIZE, n)
    trainer += _int_field(_TRAINER_BYTE_FALLBACK, int(TOKEN_BYTE in types))
    for name, token_id in (("unk", unk), ("bos", vocab.bos_id), ("eos", vocab.eos_id),
                           ("pad", vocab.pad_id)):
        id_field, piece_field = _TRAINER_IDS[name]
        valid = token_id is not None and 0 <= token_id < n
        trainer += _int_field(id_field, token_id if valid and token_id is not None else -1)
        if valid and token_id is not None:
            trainer += _bytes_field(piece_field, vocab.tokens[token_id].encode("utf-8"))
    # Identity normalizer, spaces shown as U+2581. The space prefix is applied per fragment by
    # the backend (as llama.cpp does), so SentencePiece itself never adds one.
    normalizer = (
        _bytes_field(_NORM_NAME, b"identity")
        + _int_field(_NORM_DUMMY_PREFIX, 0)
        + _int_field(_NORM_REMOVE_SPACES, 0)
        + _int_field(_NORM_ESCAPE_SPACES, 1)
    )
    return bytes(
        pieces
        + _bytes_field(_MODEL_TRAINER, bytes(trainer))
        + _bytes_field(_MODEL_NORMALIZER, normalizer)
    )


def build_sentencepiece_files(vocab: GGUFVocab) -> dict[str, bytes]:
    # SentencePiece's Python API cannot tell user-defined pieces apart: list them here.
    user_defined = [i for i, t in enumerate(vocab.token_types) if t == TOKEN_USER_DEFINED]
    options = {"add_space_prefix": vocab.add_space_prefix, "user_defined": user_defined}
    files = {
        SENTENCEPIECE_FILE: build_sentencepiece_model(vocab),
        SENTENCEPIECE_OPTIONS_FILE: (json.dumps(options) + "\n").encode(),
    }
    # Fail at import, not at first use, if SentencePiece cannot read what we wrote.
    _processor(files[SENTENCEPIECE_FILE])
    return files


def _processor(model: bytes) -> sentencepiece.SentencePieceProcessor:
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
        self._sp = _processor(model)
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
