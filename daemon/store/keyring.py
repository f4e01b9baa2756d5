"""The store together with its key: open it, finish an interrupted rotation, rotate.

Rotating a key file is crash-safe in three steps: the new key is written beside the old as
`hush.key.new` (fsynced), the database rewraps every data key under it in one transaction, then
the new file replaces the old. After a crash, `open_store` tries the current key and then the
pending one, and keeps whichever opens the store.
"""

from __future__ import annotations

from pathlib import Path

from .database import key_info
from .errors import StoreError, StoreLocked
from .keys import (
    PRODUCTION_ARGON2,
    Argon2Params,
    FromEnvironment,
    Kek,
    KeySource,
    check_private,
    commit_pending_key,
    default_key_file,
    load_kek,
    pending_key_file,
    read_key_material,
    write_pending_key,
)
from .store import Store


def open_store(
    database: Path,
    *,
    credentials_dir: Path | FromEnvironment | None = "environment",
    key_file: Path | None = None,
    passphrase: str | None = None,
    argon2: Argon2Params = PRODUCTION_ARGON2,
    create: bool = True,
) -> Store:
    """Find the key (keys.load_kek) and open the store with it.

    Raises StoreLocked for a passphrase store opened without one (the daemon then waits for
    `hush unlock`), and StoreError, naming the key and the fix, for a missing or wrong key.
    """
    key_file = key_file or default_key_file()
    kek = load_kek(key_info(database), credentials_dir=credentials_dir, key_file=key_file,
                   passphrase=passphrase, argon2=argon2, create=create)
    pending = pending_key_file(key_file)
    if kek.source.kind != "key file" or not pending.exists():
        return Store.open(database, kek)
    try:
        store = Store.open(database, kek)
    except StoreLocked:
        raise
    except StoreError:
        # The rotation committed but the new file had not replaced the old one yet.
        check_private(pending)
        store = Store.open(database, Kek(read_key_material(pending), kek.source))
        commit_pending_key(key_file)
        return store
    pending.unlink()  # the rotation never committed; that key opens nothing
    return store


def rotate_keys(store: Store, *, passphrase: str | None = None,
                argon2: Argon2Params = PRODUCTION_ARGON2) -> KeySource:
    """`hush keys rotate`: a new KEK of the same kind (or a passphrase, when one is given)
    rewraps every data key; afterwards the old KEK opens nothing. Returns the new source."""
    source = store.key_source
    if passphrase is not None:
        new = Kek.from_passphrase(passphrase, argon2.with_new_salt())
        store.rotate(new)
        if source.kind == "key file" and source.location:
            # The old file opens nothing now, and left in place it would be tried before the
            # passphrase at the next start.
            Path(source.location).unlink(missing_ok=True)
        return new.source
    if source.kind == "key file" and source.location:
        key_file = Path(source.location)
        new = write_pending_key(key_file)
        store.rotate(new)
        commit_pending_key(key_file)
        return new.source
    if source.kind == "passphrase":
        raise StoreError("this store is protected by a passphrase; rotating needs the new "
                         "passphrase (`hush keys rotate` asks for it)")
    raise StoreError(
        "the key is a systemd credential, which Hush cannot rewrite. Create a new key, seal it "
        "with `systemd-creds encrypt`, and rotate to it with Store.rotate while both are loaded "
        "(see docs/security.md, \"Rotating a credential\")."
    )
