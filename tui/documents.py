"""Sending a document to the daemon: the client reads the file, the daemon only gets bytes."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import uuid
from pathlib import Path

from hush.daemon.client import Client

# Raw bytes per frame: base64 grows them by a third, and frames stay well under 1 MiB.
CHUNK_BYTES = 512 * 1024


async def send_document(client: Client, path: Path) -> str:
    """Upload `path` in chunks; returns the document id to pass to `summarize`."""
    data = await asyncio.to_thread(path.read_bytes)
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
