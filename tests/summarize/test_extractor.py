"""The extraction child: same text as in process, and memory and time bounds that hold."""

from __future__ import annotations

import time

import pytest

from hush.daemon.summarize.extractor import ExtractLimits, Extractor
from hush.daemon.summarize.loaders import DocumentError, DocumentTooLarge, extract_text

from .conftest import CORPUS
from .pdfgen import make_shared_stream_pdf


async def test_child_reads_what_the_loader_reads() -> None:
    path = next(p for p in sorted(CORPUS.iterdir()) if p.suffix == ".pdf")
    data = path.read_bytes()
    document = await Extractor().extract(data, filename=path.name, media_type=None,
                                         limits=ExtractLimits())
    assert document == extract_text(data, filename=path.name)


async def test_loader_errors_come_back_with_their_code() -> None:
    with pytest.raises(DocumentError, match="PNG image") as caught:
        await Extractor().extract(b"\x89PNG\r\n\x1a\n" + bytes(64), filename="photo.png",
                                  media_type=None, limits=ExtractLimits())
    assert caught.value.code == "unsupported_document"


async def test_memory_limit_stops_the_child() -> None:
    # 60 MB of text under a 200 MiB address space: decoding and tidying need more.
    with pytest.raises(DocumentTooLarge, match="200 MiB") as caught:
        await Extractor().extract(b"word " * 12_000_000, filename="huge.txt", media_type=None,
                                  limits=ExtractLimits(memory_bytes=200 << 20))
    assert caught.value.code == "document_too_large"


async def test_time_limit_stops_the_child() -> None:
    # 3 M letters on one page: inside every cap, and pypdf needs a few seconds to read them.
    slow = make_shared_stream_pdf(pages=1, chars_per_page=3_000_000)
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match="longer than 1 s"):
        await Extractor().extract(slow, filename="slow.pdf", media_type=None,
                                  limits=ExtractLimits(seconds=1))
    assert time.monotonic() - started < 5
