"""Log records as single lines: whatever a message quotes cannot forge another line.

Request ids, method names, file names and error texts come from clients, documents and policy
files. journald and anything reading hushd's stderr split records on newlines, so a quoted
"\\n2026-01-01 ... INFO hushd: ..." would read as a line the daemon wrote. The filter escapes
every non-printable character of the formatted message (a newline becomes `\\n`); tracebacks,
which the formatter appends after it, keep their lines.
"""

from __future__ import annotations

import logging


def escape_control(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class EscapeControl(logging.Filter):
    """Installed on hushd's log handler; rewrites each record's message once, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_control(message)
        if escaped is not message:
            record.msg, record.args = escaped, None
        return True
