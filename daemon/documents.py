"""Summarizing documents in the daemon: uploads, policy, map-reduce in a thread, the inbox.

A client never names a path: it reads the file itself and sends the bytes in chunks
(`document.put`), then asks for `summarize`. Documents a connection has sent but not yet
summarized are capped in number and bytes, per connection and per uid. The text is read in a
child process bounded in memory and time (summarize/extractor.py). The policy's `documents`
rules apply before the model sees anything (size and type limits, then redaction); the model's
steps queue in the scheduler beside chats; the summary passes the `output` rules, and is kept
(after the `storage` rules) as an encrypted conversation for follow-up questions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .engine.generator import Job
from .errors import Blocked, HushError
from .guard import policy_event
from .policy import CompiledPolicy
from .protocol import SummarizeParams
from .store import Store
from .summarize import SUPPORTED_TYPES, Progress, Summarizer, SummaryCancelled
from .summarize.extractor import ExtractLimits, Extractor
from .tasks import own_task_threadsafe

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("hushd.documents")

Send = Callable[[Mapping[str, Any]], Coroutine[Any, Any, None]]
T = TypeVar("T")

MAX_UPLOADS_PER_CONNECTION = 4
"""Documents one connection may have sent (in part or whole) and not yet summarized."""
MAX_UPLOADS_PER_UID = 8
"""The same over all of one uid's connections."""
UPLOAD_BYTES_PER_CONNECTION = 2
UPLOAD_BYTES_PER_UID = 4
"""Bytes those documents may hold together, in multiples of the policy's max_document_bytes."""


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


class UploadLedger:
    """Documents sent and not yet summarized, counted per uid over all its connections."""

    def __init__(self) -> None:
        self.count: collections.Counter[int] = collections.Counter()
        self.bytes: collections.Counter[int] = collections.Counter()


class Uploads:
    """Documents one connection is sending, bounded per document by the policy's size and
    together by the MAX_UPLOADS_* and UPLOAD_BYTES_* caps (per connection and per uid)."""

    def __init__(self, ledger: UploadLedger, uid: int) -> None:
        self.pending: dict[str, Upload] = {}
        self.ledger = ledger
        self.uid = uid

    def put(self, document: str, *, data: str, filename: str, media_type: str | None,
            last: bool, limit: int) -> Upload:
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise HushError("document data must be base64", code="bad_request") from None
        upload = self.pending.get(document)
        if upload is not None and upload.complete:
            raise HushError(f"document {document!r} is already complete; use a new id",
                            code="bad_request")
        if (upload.size if upload else 0) + len(chunk) > limit:
            if upload is not None:
                self._drop(document)
            raise HushError(f"{filename} is larger than the policy's limit of {limit} bytes for "
                            "documents; summarize a smaller file or ask your administrator",
                            code="too_large")
        if upload is None:
            self._check_count()
        self._check_bytes(len(chunk), limit)
        if upload is None:
            upload = self.pending[document] = Upload(filename, media_type)
            self.ledger.count[self.uid] += 1
        upload.parts.append(chunk)
        upload.size += len(chunk)
        self.ledger.bytes[self.uid] += len(chunk)
        upload.complete = last
        return upload

    def take(self, document: str) -> Upload:
        upload = self.pending.get(document)
        if upload is None or not upload.complete:
            raise HushError(f"no complete document {document!r} was sent on this connection; "
                            "send it with document.put first", code="not_found")
        self._drop(document)
        return upload

    def clear(self) -> None:
        """The connection closed: what it sent is given up."""
        for document in list(self.pending):
            self._drop(document)

    def _drop(self, document: str) -> None:
        upload = self.pending.pop(document)
        self.ledger.count[self.uid] -= 1
        self.ledger.bytes[self.uid] -= upload.size
        if self.ledger.count[self.uid] <= 0:
            del self.ledger.count[self.uid], self.ledger.bytes[self.uid]

    def _check_count(self) -> None:
        if len(self.pending) >= MAX_UPLOADS_PER_CONNECTION:
            raise HushError(
                f"this connection already has {len(self.pending)} documents sent and not yet "
                f"summarized (limit {MAX_UPLOADS_PER_CONNECTION}); summarize them first",
                code="too_many_uploads")
        if self.ledger.count[self.uid] >= MAX_UPLOADS_PER_UID:
            raise HushError(
                f"uid {self.uid} already has {self.ledger.count[self.uid]} documents sent and "
                f"not yet summarized over all its connections (limit {MAX_UPLOADS_PER_UID}); "
                "summarize them, or close the connections that sent them",
                code="too_many_uploads")

    def _check_bytes(self, more: int, limit: int) -> None:
        held = sum(u.size for u in self.pending.values())
        if held + more > UPLOAD_BYTES_PER_CONNECTION * limit:
            raise HushError(
                f"documents sent on this connection and not yet summarized would hold "
                f"{held + more} bytes (limit {UPLOAD_BYTES_PER_CONNECTION * limit}); "
                "summarize them first", code="too_many_uploads")
        if self.ledger.bytes[self.uid] + more > UPLOAD_BYTES_PER_UID * limit:
            raise HushError(
                f"documents uid {self.uid} sent and not yet summarized would hold "
                f"{self.ledger.bytes[self.uid] + more} bytes over all its connections (limit "
                f"{UPLOAD_BYTES_PER_UID * limit}); summarize them first",
                code="too_many_uploads")


class Documents:
    """What document handling shares between connections: the per-uid upload ledger and the
    extraction children."""

    def __init__(self) -> None:
        self.ledger = UploadLedger()
        self.extractor = Extractor()

    def uploads(self, uid: int) -> Uploads:
        return Uploads(self.ledger, uid)


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
    if (refusal := policy.check_document(upload.size, media)) is not None:
        raise refusal
    server.scheduler.admit()
    # The text may be no longer than the bytes the policy accepts: a compressed PDF then
    # carries no more text than a plain file the policy would take.
    limit = policy.limits.max_document_bytes
    document = await server.documents.extractor.extract(
        upload.data, filename=upload.filename, media_type=upload.media_type,
        limits=ExtractLimits(max_bytes=limit, max_chars=limit))
    decision = await server.guard.apply(policy, "documents", document.text)
    server.guard.record(decision.findings, request_id=request_id, policy=policy, uid=uid)
    if (event := policy_event(request_id, "documents", decision.findings)) is not None:
        await send(event)
    if decision.blocked:
        raise Blocked(decision.block_message or "the policy blocks this document")
    loop = asyncio.get_running_loop()

    def progress(step: Progress) -> None:  # summarizer and CTranslate2 threads
        event = {"type": "progress", "id": request_id, "stage": step.stage, "done": step.done,
                 "total": step.total, "elapsed_s": round(step.elapsed, 2),
                 "eta_s": None if step.eta_seconds is None else round(step.eta_seconds, 1)}
        asyncio.run_coroutine_threadsafe(send(event), loop)

    def run(jobs: Sequence[Job]) -> None:  # the summary's thread: each step via the scheduler
        asyncio.run_coroutine_threadsafe(
            server.scheduler.decode(("summary", uid), engine, jobs, cancel), loop).result()

    engine = await server.models.acquire()
    try:
        summarizer = Summarizer(engine, run=run)
        result = await _in_own_thread(lambda: summarizer.summarize(
            decision.text, length=params.length, bullets=params.bullets, cancel=cancel,
            progress=progress))
    except SummaryCancelled as exc:
        raise HushError(str(exc), code="cancelled") from None
    finally:
        server.models.release(engine)
    await asyncio.sleep(0)  # let progress events queued from threads go out first
    shown = policy.apply("output", result.text)
    server.guard.record(shown.findings, request_id=request_id, policy=policy, uid=uid)
    if (event := policy_event(request_id, "output", shown.findings)) is not None:
        await send(event)
    if shown.blocked:
        raise Blocked(shown.block_message or "the policy blocks this summary")
    summary = shown.text
    conversation = None
    if policy.storage_mode != "none":
        conversation = await store_summary(server, uid, policy, upload.filename, summary,
                                           request_id=request_id)
    log.info("summarized a %s document: %d chunks, %d rounds, %.1f s", document.kind,
             result.chunks, result.rounds, result.seconds)
    return {"summary": summary, "conversation": conversation, "chunks": result.chunks,
            "rounds": result.rounds, "seconds": round(result.seconds, 2),
            "truncated": result.truncated, "policy_version": policy.version,
            "kind": document.kind, "pages": document.pages}


async def store_summary(server: Server, uid: int, policy: CompiledPolicy, filename: str,
                        summary: str, *, request_id: str) -> str:
    """Keep a summary as a conversation; the one place a document's filename is stored (in
    the title and the first message). The summary and the filename pass the storage rules."""
    kept = policy.apply("storage", summary)
    filename = await server.guard.storable(policy, filename, request_id=request_id, uid=uid,
                                           withheld="a document")
    title = f"Summary: {filename}"[:80]
    conversation = await server.history.call(Store.create_conversation, uid, title=title)
    await server.history.call(Store.append, uid, conversation, "user",
                              f"Summarize {filename}.")
    await server.history.call(Store.append, uid, conversation, "assistant", kept.text)
    await server.history.call(Store.set_summary, uid, conversation, kept.text)
    return conversation


async def _in_own_thread(work: Callable[[], T]) -> T:
    """Run blocking `work` on a thread of its own. A summary's thread spends most of its life
    waiting for the scheduler, whose decoding runs in the default executor: parked there, six
    summaries would take every executor thread and leave none to decode them (or a chat)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the waiting coroutine, which raises it
            future.set_exception(exc)

    # A daemon thread: it ends at the summary's next step once cancelled, and must never
    # keep a stopping daemon alive.
    threading.Thread(target=target, name="hush-summary", daemon=True).start()
    return await asyncio.wrap_future(future)


def summarize_for_inbox(server: Server, loop: asyncio.AbstractEventLoop
                        ) -> Callable[[bytes, str, threading.Event], str]:
    """The inbox's worker thread calls this; the work hops to the daemon's loop."""

    async def run(data: bytes, filename: str, stop: threading.Event) -> str:
        upload = Upload(filename, None, [data], len(data), complete=True)
        result = await summarize(server, os.getuid(), f"inbox-{time.time():.0f}", upload,
                                 SummarizeParams(document="inbox"), _drop, stop)
        return str(result["summary"])

    def summarize_bytes(data: bytes, filename: str, stop: threading.Event) -> str:
        future = own_task_threadsafe(server.tasks, loop, lambda: run(data, filename, stop))
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
