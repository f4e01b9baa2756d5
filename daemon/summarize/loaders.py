"""Turn a document's bytes into plain text: text, Markdown, HTML and PDF.

Loaders take bytes, never a path: the client reads the user's file and streams it, so the daemon
cannot be made to read a file the user could not. The type comes from the content first (a PDF
or a ZIP announces itself whatever its name) and from the name or media type second.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from ..errors import ErrorCode, HushError

if TYPE_CHECKING:
    from pypdf import PdfReader

DocumentKind = Literal["text", "markdown", "html", "pdf"]

SUPPORTED_TYPES: dict[DocumentKind, tuple[str, ...]] = {
    "text": (".txt", ".text"),
    "markdown": (".md", ".markdown"),
    "html": (".html", ".htm", ".xhtml"),
    "pdf": (".pdf",),
}
MEDIA_TYPES: dict[str, DocumentKind] = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
}
# A PDF's page contents may decompress to at most this many bytes per byte of the file (with
# a floor for small files). Text PDFs expand about 3 to 10 times; a "bomb" shares one stream of
# a repeated letter between many pages and expands thousands of times.
MAX_PDF_EXPANSION = 100
MIN_PDF_CONTENT_BUDGET = 4_000_000
MAX_PDF_PAGES = 5000

_SUFFIXES = {suffix: kind for kind, suffixes in SUPPORTED_TYPES.items() for suffix in suffixes}

# Binary formats people will try; naming them makes the error say what the file really is.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (Word .docx, OpenDocument and EPUB files are ZIPs)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (.doc, .xls)"),
    (b"{\\rtf", "an RTF file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program (ELF)"),
)


def supported_list() -> str:
    """Human list of what is supported, for error messages and help texts."""
    return "plain text (.txt), Markdown (.md), HTML (.html, .htm) and PDF (.pdf)"


class DocumentError(HushError):
    """A document that cannot be read: broken, encrypted, empty or too large."""

    code: ErrorCode = "document"


class UnsupportedDocument(DocumentError):
    """A document of a type Hush does not read."""

    code = "unsupported_document"


class DocumentTooLarge(DocumentError):
    """A document over the size limit set by the daemon configuration or policy."""

    code = "document_too_large"


@dataclass(frozen=True)
class Document:
    """Plain text taken from a document."""

    text: str
    kind: DocumentKind
    title: str | None = None
    pages: int | None = None
    """Page count, for PDFs."""


def extract_text(
    data: bytes,
    *,
    filename: str,
    media_type: str | None = None,
    max_bytes: int | None = None,
    max_chars: int | None = None,
    max_pages: int = MAX_PDF_PAGES,
) -> Document:
    """Read a document's text from its bytes.

    Args:
        data: the whole file, as the client sent it.
        filename: its name, for the type (only the last component is used; nothing is opened).
        media_type: a MIME type from the client, used when the name has no known suffix.
        max_bytes: refuse larger inputs before parsing anything.
        max_chars: refuse extracted text longer than this (a small PDF can hold much text);
            a PDF's extraction stops as soon as it is clearly over.
        max_pages: refuse PDFs with more pages.

    Raises:
        UnsupportedDocument: not one of `SUPPORTED_TYPES`; the message names them.
        DocumentTooLarge: over `max_bytes`, `max_chars` or `max_pages`, or a PDF whose
            contents expand more than `MAX_PDF_EXPANSION` times.
        DocumentError: broken, password-protected, or without any text.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name or "document"
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentTooLarge(
            f"{name} is {len(data):,} bytes; the limit is {max_bytes:,}. Split it or raise "
            "the documents size limit in the policy."
        )
    kind = _detect(data, name, media_type)
    if kind == "pdf":
        document = _pdf(data, name, max_chars=max_chars, max_pages=max_pages)
    else:
        text = _decode(data, name)
        if kind == "html":
            document = _html(text)
        elif kind == "markdown":
            document = Document(_tidy(text), "markdown", _markdown_title(text))
        else:
            document = Document(_tidy(text), "text")
    if not document.text.strip():
        raise DocumentError(f"{name} holds no text to summarize.")
    if max_chars is not None and len(document.text) > max_chars:
        raise _too_many_chars(name, f"{len(document.text):,}", max_chars)
    return document


def _too_many_chars(name: str, count: str, limit: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{name} holds {count} characters of text; the limit is {limit:,}. Split it into parts."
    )


def _detect(data: bytes, name: str, media_type: str | None) -> DocumentKind:
    head = data[:1024]
    # PDF readers accept the header anywhere in the first kilobyte; so do we.
    if b"%PDF-" in head:
        return "pdf"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise UnsupportedDocument(
                f"{name} is {what}, which Hush cannot read. Supported: {supported_list()}."
            )
    suffix = PurePosixPath(name).suffix.lower()
    kind = _SUFFIXES.get(suffix)
    if kind is None and media_type:
        kind = MEDIA_TYPES.get(media_type.split(";")[0].strip().lower())
    if kind == "pdf":
        raise DocumentError(f"{name} is named as a PDF but is not one (no %PDF- header).")
    if kind is None and suffix and suffix not in (".", ""):
        raise UnsupportedDocument(
            f"{name}: unsupported type {suffix!r}. Supported: {supported_list()}."
        )
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedDocument(
            f"{name} is binary data, not text. Supported: {supported_list()}."
        )
    if kind is None:
        # No suffix and no media type: a text file, unless it looks like HTML.
        sniff = head.lstrip().lower()
        kind = "html" if sniff.startswith((b"<!doctype html", b"<html")) else "text"
    return kind


def _decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # Not UTF-8: most likely an older Windows text file. Control characters other than
    # whitespace mean it is not text at all.
    text = data.decode("cp1252", errors="replace")
    head = text[:4096]
    controls = sum(1 for c in head if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f")
    if controls > len(head) // 100:
        raise UnsupportedDocument(
            f"{name} is binary data, not text. Supported: {supported_list()}."
        )
    return text


def _tidy(text: str) -> str:
    """Normalize line ends and blank runs, so chunking sees paragraphs as blank-line breaks."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _unwrap(text: str) -> str:
    """Join lines a PDF wrapped mid-sentence; small models read a broken line as a break in
    meaning. A line break stays where the line ends a sentence or the next one starts a list."""
    return re.sub(r"(?<=[^\s.!?:;])\n(?=[^\s\-\u2022*\d])", " ", text)


def _markdown_title(text: str) -> str | None:
    match = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tr",
    "ul",
})
_SKIPPED_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
)


class _HTMLText(HTMLParser):
    """Visible text with block elements as paragraphs; scripts, styles and head left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self.heading: str | None = None
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "li":
                self.parts.append("- ")
            self._pre += tag == "pre"
            self._in_h1 = self._in_h1 or tag == "h1"
        elif tag == "br":
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            if tag == "h1":
                self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data
            return
        if self._skip:
            return
        if self._in_h1:
            self.heading = (self.heading or "") + data
        # HTML collapses whitespace runs except inside <pre>.
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def _html(text: str) -> Document:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    body = re.sub(r"[ \t]*\n[ \t]*", "\n", "".join(parser.parts))
    title = parser.title or parser.heading
    return Document(_tidy(body), "html", " ".join(title.split()) if title else None)


class _TooMuchText(Exception):
    """Raised from pypdf's text visitor to stop an extraction that is over the limit."""


def _pdf(data: bytes, name: str, *, max_chars: int | None, max_pages: int) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PyPdfError

    # pypdf raises its own errors for most damage, but truncated or hostile files also surface
    # as plain ValueError/KeyError/... from deep inside the parser: all mean "broken file".
    broken = (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError,
              RecursionError, OSError)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are encrypted only to set permissions, with an empty user password.
            try:
                decrypted = bool(reader.decrypt(""))
            except (FileNotDecryptedError, NotImplementedError):
                decrypted = False
            if not decrypted:
                raise DocumentError(
                    f"{name} is a password-protected PDF. Save an unprotected copy (for example "
                    "print it to PDF after entering the password) and summarize that."
                )
        if len(reader.pages) > max_pages:
            raise DocumentTooLarge(f"{name} has {len(reader.pages):,} pages; the limit is "
                                   f"{max_pages:,}. Split it into parts.")
        _check_expansion(reader, name, len(data))
        pages = _page_texts(reader, max_chars)
        meta_title = reader.metadata.title if reader.metadata else None
    except _TooMuchText:
        assert max_chars is not None
        raise _too_many_chars(name, "more than " + f"{max_chars:,}", max_chars) from None
    except DocumentError:
        raise
    except broken as exc:
        raise DocumentError(
            f"{name} is a damaged PDF that cannot be read ({type(exc).__name__}). Open it in "
            "a PDF viewer and save or print it to a new PDF."
        ) from exc
    text = _unwrap(_tidy("\n\n".join(pages)))
    if not text:
        raise DocumentError(
            f"{name} has no text layer (probably scanned images); run OCR on it first."
        )
    title = str(meta_title).strip() if meta_title else None
    return Document(text, "pdf", title or None, len(pages))


def _check_expansion(reader: PdfReader, name: str, size: int) -> None:
    """Refuse a PDF whose page contents decompress to far more than the file's size.

    Counted per page, so one stream that many pages share counts once for each: that is what
    text extraction would read. pypdf decodes a shared stream once and keeps the result.
    """
    budget = max(MIN_PDF_CONTENT_BUDGET, MAX_PDF_EXPANSION * size)
    expanded = 0
    for page in reader.pages:
        contents = page.get_contents()
        expanded += len(contents.get_data()) if contents is not None else 0
        if expanded > budget:
            raise DocumentTooLarge(
                f"{name} is a {size:,}-byte PDF whose pages expand to more than {budget:,} "
                "bytes (a decompression bomb, or an unusual file); it was not read. Print it "
                "to a new PDF, or split it, and try again."
            )


def _page_texts(reader: PdfReader, max_chars: int | None) -> list[str]:
    # Raw fragments carry whitespace that tidying removes, so stop only at twice the limit
    # here; the exact limit is checked on the final text.
    stop_at = None if max_chars is None else 2 * max_chars
    seen = 0

    def count(text: str, *_args: object) -> None:
        nonlocal seen
        seen += len(text)
        if stop_at is not None and seen > stop_at:
            raise _TooMuchText

    return [page.extract_text(visitor_text=count) or "" for page in reader.pages]
