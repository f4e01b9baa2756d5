"""Hostile document bytes: PDF and ZIP bombs, PDFs with endless page trees, deep markup,
garbage. Written here from scratch (no PDF library) so the loader meets files it did not make.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib

PROSE = ("The harvest came in late that year. Rain kept the wagons off the fields for a week, "
         "and the mill ran through the night to catch up. ")


def _pdf(objects: list[bytes], root: int = 1) -> bytes:
    """A PDF with these objects (object n is objects[n - 1]) and a correct xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += (b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, root, xref))
    return bytes(out)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def _page(parent: int, font: int, content: int) -> bytes:
    return (b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
            % (parent, font, content))


def _text_stream(chars: int) -> bytes:
    line = b"(" + PROSE.encode() + b") Tj T*\n"
    return b"BT /F1 11 Tf 14 TL 56 780 Td\n" + line * max(1, chars // len(PROSE)) + b"ET"


def pdf_bomb(pages: int = 20, chars_per_page: int = 2_000_000) -> bytes:
    """One FlateDecode content stream (a few KB packed, `chars_per_page` of text unpacked)
    shared by every page: the extracted text is pages x chars_per_page."""
    packed = zlib.compress(_text_stream(chars_per_page), 9)
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages, _FONT,
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed
               + b"\nendstream"]
    objects += [_page(2, 3, 4) for _ in range(pages)]
    return _pdf(objects)


def pdf_many_pages(pages: int = 50_000) -> bytes:
    """Tens of thousands of pages, all showing one short line: a page-count bomb."""
    stream = b"BT /F1 11 Tf 56 780 Td (" + PROSE[:60].encode() + b") Tj ET"
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages, _FONT,
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    objects += [_page(2, 3, 4) for _ in range(pages)]
    return _pdf(objects)


def pdf_page_loop() -> bytes:
    """A page tree that lists itself among its own kids: a walker without a visited set loops."""
    stream = b"BT /F1 11 Tf 56 780 Td (" + PROSE[:60].encode() + b") Tj ET"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [2 0 R 5 0 R] /Count 1000000 >>", _FONT,
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               _page(2, 3, 4)]
    return _pdf(objects)


def zip_bomb(unpacked: int = 200_000_000) -> bytes:
    """A .docx-shaped ZIP whose document.xml unpacks to `unpacked` bytes (~200 KB packed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"<w:p><w:r><w:t>" + b"A" * 65000 + b"</w:t></w:r></w:p>"
            for _ in range(unpacked // len(block)):
                member.write(block)
    return buffer.getvalue()


def nested_html(depth: int = 200_000) -> bytes:
    return (b"<html><body>" + b"<div>" * depth + PROSE.encode() + b"</div>" * depth
            + b"</body></html>")


def nested_markdown(depth: int = 20_000) -> bytes:
    """Blockquotes nested `depth` levels deep, then a list nested 200 levels."""
    return (b"# Notes\n\n" + b"> " * depth + PROSE.encode() + b"\n\n"
            + b"".join(b"  " * i + b"- item\n" for i in range(200)) + b"\n")


def prose(size: int) -> bytes:
    paragraph = (PROSE * 6).strip().encode() + b"\n\n"
    return (paragraph * (size // len(paragraph) + 1))[:size]


def garbage(size: int) -> bytes:
    return os.urandom(size)


def high_bytes(size: int) -> bytes:
    """Not UTF-8 and no NUL: the loader falls back to cp1252 and must still say what it is."""
    return bytes(0x80 + b % 0x7F for b in os.urandom(size))


def one_long_word(size: int) -> bytes:
    return b"x" * size + b"\n"
