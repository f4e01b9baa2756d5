"""Summarizing documents in the daemon: uploads, policy, map-reduce in a thread, the inbox.

A client never names a path: it reads the file itself and sends the bytes in chunks
(`document.put`), then asks for `summarize`. The policy's `documents` rules apply before the
model sees anything (size and type limits, then redaction); the summary is kept as an
encrypted conversation so the user can ask follow-up questions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HushError
from .guard import policy_event
from .protocol import SummarizeParams
from .store import Store
from .summarize import SUPPORTED_TYPES, Progress, Summarizer, SummaryCancelled, extract_text

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("hushd.documents")

Send = Callable[[Mapping[str, Any]], Coroutine[Any, Any, None]]


@dataclass
class Upload:
    filename: str
    media_type: str | None
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


class Uploads:
    """Documents a connection is sending, bounded by the policy's document size."""

    def __init__(self) -> None:
        self.pending: dict[str, Upload] = {}

    def put(self, document: str, *, data: str, filename: str, media_type: str | None,
            last: bool, limit: int) -> Upload:
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise HushError("document data must be base64", code="bad_request") from None
        upload = self.pending.setdefault(document, Upload(filename, media_type))
        if upload.complete:
            raise HushError(f"document {document!r} is already complete; use a new id",
                            code="bad_request")
        upload.parts.append(chunk)
        upload.size += len(chunk)
        if upload.size > limit:
            del self.pending[document]
            raise HushError(f"{filename} is larger than the policy's limit of {limit} bytes for "
                            "documents; summarize a smaller file or ask your administrator",
                            code="too_large")
        upload.complete = last
        return upload

    def take(self, document: str) -> Upload:
        upload = self.pending.get(document)
        if upload is None or not upload.complete:
            raise HushError(f"no complete document {document!r} was sent on this connection; "
                            "send it with document.put first", code="not_found")
        del self.pending[document]
        return upload


_KIND_MEDIA = {"text": "text/plain", "markdown": "text/markdown", "html": "text/html",
               "pdf": "application/pdf"}


def media_type_of(upload: Upload) -> str:
    """The media type the policy's document_types are checked against."""
    if upload.media_type:
        return upload.media_type
    suffix = Path(upload.filename).suffix.lower()
    for kind, suffixes in SUPPORTED_TYPES.items():
        if suffix in suffixes:
            return _KIND_MEDIA[kind]
    return "application/octet-stream"


async def summarize(server: Server, uid: int, request_id: str, upload: Upload,
                    params: SummarizeParams, send: Send, cancel: threading.Event
                    ) -> dict[str, Any]:
    """Policy, extraction, map-reduce and storage for one document; returns the result."""
    policy = server.guard.for_uid(uid)
    media = media_type_of(upload)
    if (problem := policy.check_document(upload.size, media)) is not None:
        raise HushError(problem, code="too_large" if "large" in problem else "unsupported")
    document = await asyncio.to_thread(extract_text, upload.data, filename=upload.filename,
                                       media_type=upload.media_type)
    decision = policy.apply("documents", document.text)
    server.guard.record(decision.findings, request_id=request_id, policy=policy, uid=uid)
    if (event := policy_event(request_id, "documents", decision.findings)) is not None:
        await send(event)
    if decision.blocked:
        raise HushError(decision.block_message or "the policy blocks this document",
                        code="blocked")
    loop = asyncio.get_running_loop()

    def progress(step: Progress) -> None:  # summarizer and CTranslate2 threads
        event = {"type": "progress", "id": request_id, "stage": step.stage, "done": step.done,
                 "total": step.total, "elapsed_s": round(step.elapsed, 2),
                 "eta_s": None if step.eta_seconds is None else round(step.eta_seconds, 1)}
        asyncio.run_coroutine_threadsafe(send(event), loop)

    engine = await server.models.acquire()
    try:
        summarizer = Summarizer(engine)
        result = await asyncio.to_thread(summarizer.summarize, decision.text,
                                         length=params.length, bullets=params.bullets,
                                         cancel=cancel, progress=progress)
    except SummaryCancelled as exc:
        raise HushError(str(exc), code="cancelled") from None
    finally:
        server.models.release(engine)
    await asyncio.sleep(0)  # let progress events queued from threads go out first
    summary = result.text
    conversation = None
    if policy.storage_mode != "none":
        kept = policy.apply("storage", summary)
        title = f"Summary: {upload.filename}"[:80]
        conversation = await server.history.call(Store.create_conversation, uid, title=title)
        await server.history.call(Store.append, uid, conversation, "user",
                                  f"Summarize {upload.filename}.")
        await server.history.call(Store.append, uid, conversation, "assistant", kept.text)
        await server.history.call(Store.set_summary, uid, conversation, kept.text)
    log.info("summarized a %s document: %d chunks, %d rounds, %.1f s", document.kind,
             result.chunks, result.rounds, result.seconds)
    return {"summary": summary, "conversation": conversation, "chunks": result.chunks,
            "rounds": result.rounds, "seconds": round(result.seconds, 2),
            "truncated": result.truncated, "policy_version": policy.version,
            "kind": document.kind, "pages": document.pages}


def summarize_for_inbox(server: Server, loop: asyncio.AbstractEventLoop
                        ) -> Callable[[bytes, str, threading.Event], str]:
    """The inbox's worker thread calls this; the work hops to the daemon's loop."""

    async def run(data: bytes, filename: str, stop: threading.Event) -> str:
        upload = Upload(filename, None, [data], len(data), complete=True)
        result = await summarize(server, os.getuid(), f"inbox-{time.time():.0f}", upload,
                                 SummarizeParams(document="inbox"), _drop, stop)
        return str(result["summary"])

    def summarize_bytes(data: bytes, filename: str, stop: threading.Event) -> str:
        future = asyncio.run_coroutine_threadsafe(run(data, filename, stop), loop)
        while True:
            try:
                return future.result(timeout=0.2)
            except TimeoutError:
                if stop.is_set():
                    # Also ends an extraction under way (its child is killed).
                    future.cancel()
                    raise HushError("the daemon is stopping", code="cancelled") from None

    return summarize_bytes


async def _drop(_event: Mapping[str, Any]) -> None:
    """The inbox has no client to tell about progress."""
