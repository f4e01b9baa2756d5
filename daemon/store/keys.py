"""Where the key-encryption key (KEK) comes from, in order of preference.

1. A systemd credential, `$CREDENTIALS_DIRECTORY/hush.key`: `LoadCredentialEncrypted=` can seal it
   to the TPM, so a copied disk holds nothing that opens it.
2. A key file (default `<config dir>/hush.key`, deliberately not in the state directory, so a copy
   of the state directory does not carry its own key). Created with mode 0600 on first run, and
   refused, like ssh refuses a private key, when group or others can read it.
3. A passphrase, stretched by Argon2id with a random salt kept in the database. Such a store starts
   locked; `hush unlock` sends the passphrase over the socket.

A store that already holds a check value is never given a fresh key by accident: a missing key is
an error naming where the key was expected.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .. import paths
from . import crypto
from .errors import StoreError, StoreLocked

CREDENTIAL_NAME = "hush.key"
KEY_FILE_NAME = "hush.key"

SourceKind = Literal["credential", "key file", "passphrase"]
FromEnvironment = Literal["environment"]


@dataclass(frozen=True)
class KeySource:
    """Which source the KEK came from, for `hush status` and for error messages."""

    kind: SourceKind
    location: str | None = None
    """The credential or key file path; None for a passphrase."""

    def __str__(self) -> str:
        return f"{self.kind} {self.location}" if self.location else self.kind


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost. PRODUCTION is RFC 9106's second recommended option (64 MiB, t=3, p=4),
    about 0.25 s on one laptop core; edge boards with little RAM may lower memory_kib."""

    iterations: int = 3
    memory_kib: int = 64 * 1024
    lanes: int = 4
    salt: bytes = b""
    """16 random bytes, stored in the database's meta table (a salt is not a secret)."""

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.lanes < 1 or self.memory_kib < 8 * self.lanes:
            raise ValueError("Argon2id needs iterations >= 1, lanes >= 1, memory_kib >= 8*lanes")

    def with_new_salt(self) -> Argon2Params:
        return Argon2Params(self.iterations, self.memory_kib, self.lanes, secrets.token_bytes(16))

    def to_meta(self) -> str:
        return f"{self.iterations}:{self.memory_kib}:{self.lanes}:{self.salt.hex()}"

    @classmethod
    def from_meta(cls, text: str) -> Argon2Params:
        iterations, memory, lanes, salt = text.split(":")
        return cls(int(iterations), int(memory), int(lanes), bytes.fromhex(salt))


PRODUCTION_ARGON2 = Argon2Params()


class Kek:
    """A key-encryption key. It wraps data keys and never leaves memory."""

    def __init__(self, key: bytes, source: KeySource, argon2: Argon2Params | None = None) -> None:
        if len(key) != crypto.KEY_BYTES:
            raise ValueError("a key-encryption key is 32 bytes")
        self._key = key
        self.source = source
        self.argon2 = argon2

    def __repr__(self) -> str:
        return f"Kek(source={self.source!s})"

    @classmethod
    def from_passphrase(cls, passphrase: str, params: Argon2Params) -> Kek:
        if not passphrase:
            raise StoreError("the passphrase is empty; type the one this store was made with")
        kdf = Argon2id(salt=params.salt, length=crypto.KEY_BYTES, iterations=params.iterations,
                       lanes=params.lanes, memory_cost=params.memory_kib)
        return cls(kdf.derive(passphrase.encode()), KeySource("passphrase"), params)

    def wrap(self, data_key: bytes, ref: crypto.RecordRef) -> bytes:
        return crypto.seal(self._key, ref, data_key)

    def unwrap(self, wrapped: bytes, ref: crypto.RecordRef) -> bytes:
        """Raises crypto.Unauthentic when this KEK did not wrap it there."""
        return crypto.unseal(self._key, ref, wrapped)


@dataclass(frozen=True)
class StoredKeyInfo:
    """What an initialised database says about its KEK (all of it public)."""

    kind: SourceKind
    argon2: Argon2Params | None


def read_key_material(path: Path) -> bytes:
    """A key is 32 raw bytes, or 64 hex digits (what Hush writes, easy to back up on paper)."""
    data = path.read_bytes()
    if len(data) == crypto.KEY_BYTES:
        return data
    with contextlib.suppress(ValueError, binascii.Error):
        key = bytes.fromhex(data.decode("ascii").strip())
        if len(key) == crypto.KEY_BYTES:
            return key
    raise StoreError(f"{path} is not a Hush key: it must hold 32 raw bytes or 64 hex digits. "
                     "Restore the original key file; Hush never rewrites one.")


def check_private(path: Path) -> None:
    """Refuse a key file that others can read or that someone else owns, as ssh does."""
    info = path.stat()
    if info.st_mode & 0o077:
        raise StoreError(
            f"the key file {path} is readable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`, then start again"
        )
    if info.st_uid != os.geteuid():
        raise StoreError(f"the key file {path} belongs to uid {info.st_uid}, not to uid "
                         f"{os.geteuid()} running Hush; `chown` it to the user running hushd")


def create_key_file(path: Path) -> bytes:
    """Write a new random key with mode 0600; O_EXCL so an existing key is never replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = crypto.new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StoreError(f"{path} appeared while Hush was creating it; start again") from None
    except OSError as error:
        raise StoreError(f"cannot create the key file {path} ({error.strerror}); give Hush a "
                         "writable key file path or a systemd credential `hush.key`") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(path.parent)
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_key_file() -> Path:
    return paths.default_config_dir() / KEY_FILE_NAME


def default_credentials_dir() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def load_kek(
    stored: StoredKeyInfo | None,
    *,
    credentials_dir: Path | FromEnvironment | None = "environment",
    key_file: Path | None = None,
    passphrase: str | None = None,
    argon2: Argon2Params = PRODUCTION_ARGON2,
    create: bool = True,
) -> Kek:
    """Find the KEK. `stored` is what the database says (None: no database or never initialised).

    An explicit passphrase wins (it is a command-line choice); then the credential, then the key
    file; then, for a passphrase store, StoreLocked; then a new key file, only for an empty store.
    """
    key_file = key_file or default_key_file()
    if credentials_dir == "environment":
        credentials_dir = default_credentials_dir()
    if passphrase is not None:
        params = stored.argon2 if stored and stored.argon2 else argon2.with_new_salt()
        return Kek.from_passphrase(passphrase, params)
    if credentials_dir is not None and (credentials_dir / CREDENTIAL_NAME).exists():
        credential = credentials_dir / CREDENTIAL_NAME
        # systemd owns the credentials directory and its modes; no ownership check applies.
        return Kek(read_key_material(credential), KeySource("credential", str(credential)))
    if key_file.exists():
        check_private(key_file)
        return Kek(read_key_material(key_file), KeySource("key file", str(key_file)))
    if stored is not None and stored.kind == "passphrase":
        raise StoreLocked("the conversation store is protected by a passphrase and is locked; "
                          "run `hush unlock` to type it")
    if stored is not None:
        where = (f"the systemd credential `{CREDENTIAL_NAME}`" if stored.kind == "credential"
                 else f"the key file {key_file}")
        raise StoreError(
            f"the conversation store is encrypted with a {stored.kind}, but {where} is missing. "
            "Restore that key (from your backup) and start again. Hush will not make a new key "
            "while encrypted data exists; if the store is empty and you want a fresh one, delete "
            "the database file yourself."
        )
    if not create:
        raise StoreError(f"no key found: neither the credential `{CREDENTIAL_NAME}` nor the key "
                         f"file {key_file} exists; create one or allow Hush to create it")
    return Kek(create_key_file(key_file), KeySource("key file", str(key_file)))


def pending_key_file(key_file: Path) -> Path:
    """Where a rotation puts the new key until the database commits to it."""
    return key_file.with_name(key_file.name + ".new")


def write_pending_key(key_file: Path) -> Kek:
    """The first step of rotating a key file: a new key beside the old, fsynced, mode 0600."""
    pending = pending_key_file(key_file)
    pending.unlink(missing_ok=True)  # a rotation that never committed; its key opens nothing
    return Kek(create_key_file(pending), KeySource("key file", str(key_file)))


def commit_pending_key(key_file: Path) -> None:
    """The last step: the database already uses the new key, so it replaces the old atomically."""
    os.replace(pending_key_file(key_file), key_file)
    _fsync_dir(key_file.parent)
