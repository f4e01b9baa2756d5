"""Summarize documents on the device: loaders, token-aware chunking, map-reduce, a watched inbox.

The daemon only ever sees bytes a client sent (or bytes the inbox read from a directory the
daemon's own configuration names); nothing here opens a path a client chose.
"""

from __future__ import annotations

from .chunking import Chunk, chunk_text
from .loaders import SUPPORTED_TYPES, Document, DocumentError, UnsupportedDocument, extract_text
from .summarizer import (
    Length,
    Progress,
    Summarizer,
    SummaryCancelled,
    SummaryResult,
)

__all__ = [
    "SUPPORTED_TYPES",
    "Chunk",
    "Document",
    "DocumentError",
    "Length",
    "Progress",
    "Summarizer",
    "SummaryCancelled",
    "SummaryResult",
    "UnsupportedDocument",
    "chunk_text",
    "extract_text",
]
