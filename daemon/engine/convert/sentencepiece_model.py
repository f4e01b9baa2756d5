"""A SentencePiece `tokenizer.model` rebuilt from a GGUF file's vocabulary.

The GGUF's tokens, scores and token types become a SentencePiece `ModelProto` (BPE, byte
fallback, identity normalizer). The protobuf wire format is written here directly: the message
is small and fixed, and the `sentencepiece_model_pb2` module sentencepiece ships would need the
protobuf runtime as another dependency. At run time sentencepiece_vocab.py reads it.
"""

from __future__ import annotations

import json
import re
import struct

from ..errors import ModelError, UnsupportedModelError
from ..sentencepiece_vocab import SENTENCEPIECE_FILE, SENTENCEPIECE_OPTIONS_FILE, load_processor
from .gguf_vocab import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    GGUFVocab,
)

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
    load_processor(files[SENTENCEPIECE_FILE])
    return files
