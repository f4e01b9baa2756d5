"""The run-time tokenizer of an imported model, over the files the importer wrote.

The importer (convert/tokenizer_files.py) rebuilt the GGUF's vocabulary as files a tokenizer
library reads, so run time never needs the GGUF again: a `tokenizer.json` for the `tokenizers`
library (byte-level BPE: SmolLM2, Llama 3, Qwen) or a SentencePiece `tokenizer.model` (Gemma,
see sentencepiece_vocab.py). `Tokenizer` encodes prompts with either backend, in model ids
when the vocabulary was pruned, and `StreamDecoder` turns generated ids into text one token
at a time without ever emitting half a UTF-8 character.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import tokenizers

from .errors import ModelError
from .sentencepiece_vocab import SENTENCEPIECE_FILE, SentencePieceBackend

TOKENIZER_FILE = "tokenizer.json"
KEPT_FILE = "kept-tokens.json"
"""A pruned model's kept original ids, in model order (convert/vocab_pruning.py)."""


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable character map, reversed."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class StreamDecoder:
    """Turns generated token ids into text, one token at a time.

    Byte-level and byte-fallback vocabularies split multi-byte characters (emoji, CJK) over
    several tokens. An incremental UTF-8 decoder holds those bytes back until the character
    is complete, so every piece handed to a client is valid text and never ends in U+FFFD.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token ("" while a character is still incomplete)."""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    @property
    def pending(self) -> bool:
        """True while bytes of an unfinished character are held back."""
        buffered, _ = self._utf8.getstate()
        return bool(buffered)


class TokenizerBackend(Protocol):
    """What `Tokenizer` needs from a tokenizer library."""

    vocab_size: int
    special_tokens: dict[str, int]  # control tokens: never shown as text

    def encode(self, text: str) -> list[int]: ...

    def id_to_token(self, token_id: int) -> str | None: ...

    def token_to_id(self, token: str) -> int | None: ...

    def piece_bytes(self, token_id: int) -> bytes: ...


class ByteLevelBackend:
    """Byte-level BPE through the `tokenizers` library (tokenizer.json)."""

    def __init__(self, backend: tokenizers.Tokenizer) -> None:
        self._backend = backend
        document = json.loads(backend.to_str())
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        self.special_tokens: dict[str, int] = {}
        self._added: dict[int, str] = {}
        for entry in document.get("added_tokens", []):
            self._added[int(entry["id"])] = entry["content"]
            if entry.get("special"):
                self.special_tokens[entry["content"]] = int(entry["id"])

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def id_to_token(self, token_id: int) -> str | None:
        token = self._backend.id_to_token(token_id)
        return None if token is None else str(token)

    def token_to_id(self, token: str) -> int | None:
        token_id = self._backend.token_to_id(token)
        return None if token_id is None else int(token_id)

    def piece_bytes(self, token_id: int) -> bytes:
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        token = self.id_to_token(token_id)
        if token is None:
            raise ModelError(f"Token id {token_id} is outside the vocabulary ({self.vocab_size}).")
        table = byte_decoder()
        if all(c in table for c in token):
            return bytes(table[c] for c in token)
        return token.encode("utf-8")


@lru_cache(maxsize=1)
def byte_encoder() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the byte-level BPE base alphabet)."""
    return {b: c for c, b in byte_decoder().items()}


class RemappedBackend:
    """A pruned vocabulary (convert/vocab_pruning.py): the tokenizer files keep the original
    ids, the model has rows only for `kept`, in that order. Every method here speaks model ids.

    The importer restricted the tokenizer so it cannot produce a dropped token; should one
    appear anyway (a single character SentencePiece does not split further), it is spelled
    with byte tokens, which are always kept.
    """

    def __init__(self, backend: TokenizerBackend, kept: Sequence[int]) -> None:
        self._backend = backend
        self._kept = list(kept)
        self._model_id = {original: i for i, original in enumerate(self._kept)}
        self.vocab_size = len(self._kept)
        self.special_tokens = {token: self._model_id[i]
                               for token, i in backend.special_tokens.items()
                               if i in self._model_id}
        self._byte_ids: dict[int, int] = {}
        for b in range(256):
            for name in (f"<0x{b:02X}>", byte_encoder()[b]):
                original = backend.token_to_id(name)
                if original is not None and original in self._model_id:
                    self._byte_ids[b] = self._model_id[original]
                    break

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for original in self._backend.encode(text):
            model_id = self._model_id.get(original)
            if model_id is not None:
                out.append(model_id)
                continue
            try:
                out.extend(self._byte_ids[b] for b in self._backend.piece_bytes(original))
            except KeyError:
                raise ModelError("The pruned vocabulary cannot spell this text (a byte token "
                                 "is missing). Import the model again.") from None
        return out

    def _original(self, token_id: int) -> int | None:
        return self._kept[token_id] if 0 <= token_id < self.vocab_size else None

    def id_to_token(self, token_id: int) -> str | None:
        original = self._original(token_id)
        return None if original is None else self._backend.id_to_token(original)

    def token_to_id(self, token: str) -> int | None:
        original = self._backend.token_to_id(token)
        return None if original is None else self._model_id.get(original)

    def piece_bytes(self, token_id: int) -> bytes:
        original = self._original(token_id)
        if original is None:
            raise ModelError(f"Token id {token_id} is outside the vocabulary ({self.vocab_size}).")
        return self._backend.piece_bytes(original)


def read_kept(model_dir: Path) -> list[int] | None:
    """The kept original ids of a pruned model, None for a model with its whole vocabulary."""
    path = model_dir / KEPT_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        kept = [int(i) for i in document["kept"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is damaged ({exc}). Import the model again.") from None
    if kept != sorted(set(kept)) or not kept or kept[0] < 0:
        raise ModelError(f"{path} is damaged (ids not ascending). Import the model again.")
    return kept


class Tokenizer:
    """The run-time tokenizer of an imported model, over either backend."""

    def __init__(self, backend: TokenizerBackend | tokenizers.Tokenizer) -> None:
        if isinstance(backend, tokenizers.Tokenizer):
            backend = ByteLevelBackend(backend)
        self._backend: TokenizerBackend = backend
        self._special = dict(backend.special_tokens)
        self._special_ids = frozenset(self._special.values())
        self._bytes_cache: dict[int, bytes] = {}

    @classmethod
    def load(cls, model_dir: Path) -> Tokenizer:
        model_dir = Path(model_dir)
        backend: TokenizerBackend
        if (model_dir / SENTENCEPIECE_FILE).is_file():
            backend = SentencePieceBackend.load(model_dir)
        else:
            path = model_dir / TOKENIZER_FILE
            if not path.is_file():
                raise ModelError(f"{model_dir} has no {TOKENIZER_FILE}. Import the model again "
                                 "from its GGUF file.")
            try:
                backend = ByteLevelBackend(tokenizers.Tokenizer.from_file(str(path)))
            except Exception as exc:  # the tokenizers library raises plain Exception subclasses
                raise ModelError(
                    f"{path} cannot be read ({exc}). Import the model again from its GGUF file."
                ) from exc
        kept = read_kept(model_dir)
        return cls(backend if kept is None else RemappedBackend(backend, kept))

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Tokenizer:
        """A tokenizer from files the importer has built but not yet written to a model."""
        with tempfile.TemporaryDirectory(prefix="hush-tokenizer-") as tmp:
            for name, content in files.items():
                (Path(tmp) / name).write_bytes(content)
            return cls.load(Path(tmp))

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Control tokens (`<|im_start|>`, `<start_of_turn>`, ...) by string."""
        return dict(self._special)

    def encode(self, text: str) -> list[int]:
        """Token ids for text; special-token strings in the text map to their ids.

        No BOS is added here: the engine decides that, because chat templates often
        write it themselves.
        """
        return self._backend.encode(text)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        parts = []
        for i in ids:
            if i in self._special_ids:
                if not skip_special:
                    parts.append(self.id_to_token(i).encode("utf-8"))
            else:
                parts.append(self.token_bytes(i))
        return b"".join(parts).decode("utf-8", errors="replace")

    def id_to_token(self, token_id: int) -> str:
        token = self._backend.id_to_token(token_id)
        if token is None:
            raise ModelError(f"Token id {token_id} is outside the vocabulary ({self.vocab_size}).")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for; b"" for control tokens."""
        cached = self._bytes_cache.get(token_id)
        if cached is None:
            if token_id in self._special_ids:
                cached = b""
            elif not 0 <= token_id < self.vocab_size:
                raise ModelError(
                    f"Token id {token_id} is outside the vocabulary ({self.vocab_size})."
                )
            else:
                cached = self._backend.piece_bytes(token_id)
            self._bytes_cache[token_id] = cached
        return cached

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)
