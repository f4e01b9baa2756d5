"""Read a document's text in a child process, bounded in memory and time.

The loaders' own caps (characters, pages, PDF expansion) stop the hostile documents we know
of early and with a clear message. This is the bound for the ones we do not: a parser bug, a
construct pypdf expands in a way nobody counted. The child gets an address-space limit
(RLIMIT_AS), a CPU limit and no core dumps before it reads a byte, and the parent kills it
after a wall-clock limit, so whatever a document does, the daemon's own memory does not grow
and its event loop keeps answering. At most `concurrency` children run at once.

Wire format: the parent writes one JSON line (the arguments) and then the document's bytes to
the child's stdin; the child writes one JSON object to stdout, the document or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import HushError
from .loaders import Document, DocumentError, DocumentTooLarge, UnsupportedDocument, extract_text

_ERRORS = {kind.code: kind for kind in (DocumentError, DocumentTooLarge, UnsupportedDocument)}

MEMORY_BYTES = 1 << 30
"""Address space a child may map: Python with pypdf needs ~60 MB; a 10 MB PDF a few hundred."""
SECONDS = 120.0
"""Wall-clock (and CPU) time a child may take; pypdf reads a long text PDF in well under."""


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int | None = None
    max_chars: int | None = None
    memory_bytes: int = MEMORY_BYTES
    seconds: float = SECONDS


class Extractor:
    """Runs `extract_text` in child processes, `concurrency` at a time."""

    def __init__(self, concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def extract(self, data: bytes, *, filename: str, media_type: str | None,
                      limits: ExtractLimits) -> Document:
        """The document's text, or the loader's error; DocumentTooLarge past the limits."""
        header = {"filename": filename, "media_type": media_type, **asdict(limits)}
        async with self._slots:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-m", __name__,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            try:
                out, _ = await asyncio.wait_for(
                    child.communicate(json.dumps(header).encode() + b"\n" + data),
                    limits.seconds)
            except TimeoutError:
                raise DocumentTooLarge(
                    f"{filename} took longer than {limits.seconds:g} s to read and was "
                    "stopped; split it into parts or save it as plain text.") from None
            finally:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    await child.wait()
        return _answer(out, filename, limits)


def _answer(out: bytes, filename: str, limits: ExtractLimits) -> Document:
    try:
        reply: dict[str, Any] = json.loads(out)
    except ValueError:
        # No reply at all: the kernel refused it memory, or it ran out of CPU time.
        raise DocumentTooLarge(
            f"{filename} needed more than {limits.memory_bytes // (1 << 20)} MiB or "
            f"{limits.seconds:g} s to read and was stopped; split it into parts or save it "
            "as plain text.") from None
    if "error" in reply:
        raise _ERRORS.get(reply["error"], DocumentError)(reply["message"])
    return Document(**reply["document"])


def _child() -> None:
    limits = _limits_from_stdin_header()
    data = sys.stdin.buffer.read()
    try:
        document = extract_text(data, filename=limits["filename"],
                                media_type=limits["media_type"],
                                max_bytes=limits["max_bytes"], max_chars=limits["max_chars"])
        reply: dict[str, Any] = {"document": asdict(document)}
    except HushError as exc:
        reply = {"error": exc.code, "message": exc.message}
    except MemoryError:
        reply = {"error": DocumentTooLarge.code,
                 "message": f"{limits['filename']} needed more than "
                            f"{limits['memory_bytes'] // (1 << 20)} MiB to read; split it "
                            "into parts or save it as plain text."}
    except Exception as exc:  # the process boundary: name the failure, never quote it
        # Only the type: an exception's text can quote the document.
        reply = {"error": DocumentError.code,
                 "message": f"{limits['filename']} could not be read: the reader failed "
                            f"({type(exc).__name__}). Open it and save it again, or save it "
                            "as plain text."}
    sys.stdout.write(json.dumps(reply))


def _limits_from_stdin_header() -> dict[str, Any]:
    header: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    memory = int(header["memory_bytes"])
    seconds = int(header["seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core dump would hold the text
    return header


if __name__ == "__main__":
    _child()
