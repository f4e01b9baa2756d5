"""Loaders: every supported type from bytes, and clear errors for everything else."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from pypdf import PdfReader, PdfWriter

from hush.daemon.summarize.loaders import (
    DocumentError,
    DocumentTooLarge,
    UnsupportedDocument,
    extract_text,
)

from .conftest import CORPUS
from .pdfgen import make_pdf, make_shared_stream_pdf


def test_corpus_has_every_type_and_a_long_document() -> None:
    files = [p for p in CORPUS.iterdir() if p.name != "facts.yaml"]
    assert len(files) >= 10
    assert {p.suffix for p in files} >= {".txt", ".md", ".html", ".pdf"}
    words = max(len(extract_text(p.read_bytes(), filename=p.name).text.split()) for p in files)
    assert words > 10_000


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir() if p.name != "facts.yaml"))
def test_every_corpus_document_loads(name: str) -> None:
    document = extract_text((CORPUS / name).read_bytes(), filename=name)
    assert len(document.text.split()) > 100
    assert "\r" not in document.text


def test_plain_text_encodings() -> None:
    assert extract_text("Grüße aus Köln.".encode(), filename="a.txt").text == "Grüße aus Köln."
    assert extract_text("Grüße".encode("utf-16"), filename="a.txt").text == "Grüße"
    windows = "Café crème".encode("cp1252")
    assert extract_text(windows, filename="a.txt").text == "Café crème"
    assert extract_text(b"\xef\xbb\xbfBOM\r\nline", filename="a.txt").text == "BOM\nline"


def test_markdown_keeps_text_and_finds_title() -> None:
    document = extract_text(b"Intro\n\n# The Title\n\nBody *text*.\n", filename="n.md")
    assert document.kind == "markdown"
    assert document.title == "The Title"
    assert "Body *text*." in document.text


def test_html_drops_scripts_styles_and_head() -> None:
    html = (b"<html><head><title>T &amp; C</title><style>p{color:red}</style></head><body>"
            b"<script>var secret = 1;</script><p>First&nbsp;para.</p><ul><li>one</li>"
            b"<li>two</li></ul><pre>a  b\n c</pre></body></html>")
    document = extract_text(html, filename="page.html")
    assert document.kind == "html"
    assert document.title == "T & C"
    assert "secret" not in document.text and "color" not in document.text
    assert "First para." in document.text  # &nbsp; is whitespace to a reader
    assert "- one" in document.text and "- two" in document.text
    assert "a  b\nc" in document.text  # <pre> keeps its line breaks and inner spaces


def test_type_from_media_type_or_sniffing_without_a_suffix() -> None:
    assert extract_text(b"# Hi\n\ntext", filename="notes", media_type="text/markdown").kind == (
        "markdown")
    assert extract_text(b"<!DOCTYPE html><p>hello</p>", filename="download").kind == "html"
    assert extract_text(b"just words", filename="README").kind == "text"
    # Only the last path component counts; nothing is ever opened.
    assert extract_text(b"words", filename="../../etc/x.txt").kind == "text"


def test_pdf_from_bytes_with_title_and_pages() -> None:
    data = make_pdf("Page one text. " * 200, title="Report", lines_per_page=10)
    document = extract_text(data, filename="r.pdf")
    assert document.kind == "pdf"
    assert document.title == "Report"
    assert document.pages is not None and document.pages > 1
    assert "Page one text." in document.text


def test_pdf_is_detected_by_content_whatever_its_name() -> None:
    data = make_pdf("Hidden PDF body.")
    assert extract_text(data, filename="letter.txt").kind == "pdf"


def _encrypt(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_password_protected_pdf_is_a_clear_error() -> None:
    data = _encrypt(make_pdf("Secret contract terms."), "hunter2")
    with pytest.raises(DocumentError, match="password-protected"):
        extract_text(data, filename="c.pdf")


def test_pdf_encrypted_with_an_empty_password_reads() -> None:
    data = _encrypt(make_pdf("Permissions only."), "")
    assert "Permissions only." in extract_text(data, filename="c.pdf").text


@pytest.mark.parametrize("cut", [40, 200, 400])
def test_broken_pdf_is_a_clear_error(cut: int) -> None:
    data = make_pdf("Some text that will be cut off.")
    with pytest.raises(DocumentError, match=r"damaged PDF|no text"):
        extract_text(data[:cut], filename="broken.pdf")


def test_named_pdf_that_is_not_a_pdf() -> None:
    with pytest.raises(DocumentError, match="not one"):
        extract_text(b"hello", filename="fake.pdf")


def test_pdf_without_text_layer() -> None:
    with pytest.raises(DocumentError, match="OCR"):
        extract_text(make_pdf(""), filename="scan.pdf")


def _docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "needle"),
    [
        (_docx(), "letter.docx", "ZIP archive"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "scan.png", "PNG image"),
        (b"a,b\n1,2\n", "table.csv", "'.csv'"),
        (bytes(range(256)) * 4, "blob", "binary data"),
    ],
)
def test_unsupported_types_name_the_supported_ones(data: bytes, filename: str,
                                                   needle: str) -> None:
    with pytest.raises(UnsupportedDocument) as caught:
        extract_text(data, filename=filename)
    message = str(caught.value)
    assert needle in message
    for supported in (".txt", ".md", ".html", ".pdf"):
        assert supported in message
    assert caught.value.code == "unsupported_document"


def test_limits() -> None:
    with pytest.raises(DocumentTooLarge, match="limit is 10"):
        extract_text(b"x" * 11, filename="a.txt", max_bytes=10)
    with pytest.raises(DocumentTooLarge, match="characters"):
        extract_text(b"word " * 100, filename="a.txt", max_chars=50)


def test_pdf_bomb_is_refused_before_its_text_is_read() -> None:
    bomb = make_shared_stream_pdf(pages=20, chars_per_page=5_000_000)
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match="expand to more than") as caught:
        extract_text(bomb, filename="bomb.pdf")
    assert caught.value.code == "document_too_large"
    assert time.monotonic() - started < 10  # reading one of its pages alone takes ~4 s


def test_pdf_text_stops_at_the_character_limit() -> None:
    # One page of 200,000 letters: within the expansion budget, over the character limit.
    pdf = make_shared_stream_pdf(pages=1, chars_per_page=200_000)
    with pytest.raises(DocumentTooLarge, match="more than 50,000 characters"):
        extract_text(pdf, filename="dense.pdf", max_chars=50_000)


def test_pdf_page_limit() -> None:
    pdf = make_pdf("\n\n".join(f"Page {n} text." for n in range(12)), lines_per_page=2)
    with pytest.raises(DocumentTooLarge, match="pages; the limit is 3"):
        extract_text(pdf, filename="long.pdf", max_pages=3)
    assert extract_text(pdf, filename="long.pdf").pages == 12


def test_empty_document() -> None:
    with pytest.raises(DocumentError, match="no text"):
        extract_text(b"  \n\n ", filename="a.txt")
    with pytest.raises(DocumentError, match="no text"):
        extract_text(b"<html><script>x()</script></html>", filename="a.html")
