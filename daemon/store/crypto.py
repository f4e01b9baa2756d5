"""The envelope: AES-256-GCM records bound to their owner, conversation, kind and position.

Every sealed blob is `version (1 byte) || nonce (12 random bytes) || ciphertext || tag (16)`.
The associated data is built from a `RecordRef`, so a blob authenticates only in the one place it
was written: copying it to another position, kind, conversation or owner makes `unseal` fail.
Plaintext is padded (Padmé, at least 256 bytes) before sealing, so sizes on disk say little.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = 1
# Records shorter than this all look alike on disk; most chat turns fit.
MIN_PADDED = 256

RecordKind = Literal["key", "check", "title", "system", "summary", "head", "message"]


class Unauthentic(Exception):
    """A blob did not authenticate in the place it was read from (internal; callers translate)."""


@dataclass(frozen=True)
class RecordRef:
    """Where a record lives. Its bytes are the associated data, so they must be unambiguous."""

    uid: int
    conversation_id: str
    kind: RecordKind
    position: int = 0

    def associated_data(self) -> bytes:
        # Ids are hex and kinds are fixed words, so "|" cannot appear inside a field.
        return (
            f"hush/{FORMAT_VERSION}|{self.uid}|{self.conversation_id}|{self.kind}|{self.position}"
        ).encode()


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def padded_length(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): at most ~12% overhead, leaks O(log log n) bits of size."""
    if length <= MIN_PADDED:
        return MIN_PADDED
    exponent = length.bit_length() - 1
    mantissa_bits = exponent.bit_length()
    mask = (1 << (exponent - mantissa_bits)) - 1
    return (length + mask) & ~mask


def seal(key: bytes, ref: RecordRef, plaintext: bytes) -> bytes:
    framed = struct.pack(">I", len(plaintext)) + plaintext
    framed += bytes(padded_length(len(framed)) - len(framed))
    # Random nonces are safe here: a data key seals one conversation (far below 2^32 records).
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(key).encrypt(nonce, framed, ref.associated_data())
    return bytes([FORMAT_VERSION]) + nonce + body


def unseal(key: bytes, ref: RecordRef, blob: object) -> bytes:
    # A column edited outside Hush may hold any SQLite type: an INTEGER title is unauthentic
    # like a flipped byte, never a TypeError.
    if (not isinstance(blob, bytes) or len(blob) < 1 + NONCE_BYTES + 16
            or blob[0] != FORMAT_VERSION):
        raise Unauthentic("not a sealed record")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        framed = AESGCM(key).decrypt(nonce, body, ref.associated_data())
    except InvalidTag:
        raise Unauthentic("authentication failed") from None
    (length,) = struct.unpack(">I", framed[:4])
    return framed[4 : 4 + length]
