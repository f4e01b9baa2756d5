"""Sending a document to the daemon: the client reads the file, the daemon only gets bytes."""

from __future__ import annotations

import asyncio
import base64
import errno
import mimetypes
import os
import stat
import uuid
from pathlib import Path

from hush.daemon.client import Client

# Raw bytes per frame: base64 grows them by a third, and frames stay well under 1 MiB.
CHUNK_BYTES = 512 * 1024


def read_document(path: Path) -> bytes:
    """The bytes of a regular file; a named pipe, device or socket is refused, not waited on.

    A symlink the user names is followed, by resolving it first; what is opened is the
    resolved path, with O_NOFOLLOW and O_NONBLOCK (so a FIFO cannot block the open), and is
    read only once fstat says it is a regular file. Raises OSError saying what is wrong.
    """
    real = path.resolve(strict=True)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a directory; name the files in it")
        raise OSError(errno.EINVAL, "not a regular file (a named pipe, device or socket); "
                      "copy what it holds into a file first")
    with os.fdopen(fd, "rb") as file:
        return file.read()


async def send_document(client: Client, path: Path) -> str:
    """Upload `path` in chunks; returns the document id to pass to `summarize`."""
    data = await asyncio.to_thread(read_document, path)
    document = uuid.uuid4().hex
    media_type, _ = mimetypes.guess_type(path.name)
    offsets = range(0, max(len(data), 1), CHUNK_BYTES)
    for i, start in enumerate(offsets):
        chunk = data[start:start + CHUNK_BYTES]
        params = {"document": document, "data": base64.b64encode(chunk).decode(),
                  "filename": path.name, "last": i == len(offsets) - 1}
        if media_type is not None:
            params["media_type"] = media_type
        await client.call("document.put", params)
    return document
