"""Hostile documents through `hush summarize` and through the daemon's inbox.

A document case holds when the command ends within its time with a clear error (non-zero exit,
a `hush:` message, no traceback, not "internal error") or a bounded summary, while the daemon's
RSS grows less than RSS_BOUND_MB and `status` keeps answering within LATENCY_BOUND_MS, and the
daemon's log stays free of tracebacks. Where a file holds a secret of someone else's, the
secret must appear nowhere: not in the command's output, the daemon's log, or the outbox.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import secrets
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import files
from .harness import Hushd, Lab, OtherUser, Sampler, is_root
from .verdicts import TRACEBACK, Case, Check, Skip, log_problems, play

RSS_BOUND_MB = 512
LATENCY_BOUND_MS = 1000
TIMEOUT_S = 90.0
OUTPUT_BOUND = 100_000
"""Characters of summary that still count as a bounded result."""
LIMIT = 10_485_760
"""The default policy's max_document_bytes."""

# What a refusal said, by keyword, so the reason never quotes the daemon.
_KINDS = (("too large", "too large"), ("limit", "over a limit"), ("characters", "too long"),
          ("not a regular file", "not a regular file"), ("permission denied", "permission denied"),
          ("binary", "binary data"), ("cannot read", "unsupported type"),
          ("unsupported", "unsupported type"), ("damaged", "damaged file"),
          ("no text", "no text"), ("pages", "too many pages"),
          ("not accepted", "type not accepted by the policy"))


def refusal_kind(stderr: str) -> str:
    low = stderr.lower()
    return next((kind for word, kind in _KINDS if word in low), "other")


@dataclass(frozen=True)
class Doc:
    name: str
    make: Callable[[Path, str], Path]
    """Writes the hostile file into a directory (given a canary) and returns what to name."""
    as_other: bool = False
    """Run `hush summarize` as uid 65534 (the file belongs to someone else)."""
    timeout_s: float = TIMEOUT_S


def _write(name: str, data: Callable[[], bytes]) -> Callable[[Path, str], Path]:
    def make(directory: Path, _canary: str) -> Path:
        path = directory / name
        path.write_bytes(data())
        return path
    return make


def _fifo(directory: Path, _canary: str) -> Path:
    path = directory / "notes.txt"
    os.mkfifo(path)
    return path


def _dev_zero(directory: Path, _canary: str) -> Path:
    path = directory / "zero.txt"
    path.symlink_to("/dev/zero")
    return path


def _secret_file(directory: Path, canary: str) -> Path:
    """Root's private notes (0600), with a canary; the link to it is the other user's."""
    target = directory / "root-notes.txt"
    target.write_text(f"Private notes. Bank PIN {canary}.\n" * 20)
    os.chmod(target, 0o600)
    link = directory / "shared-report.txt"
    link.symlink_to(target)
    return link


DOCS: tuple[Doc, ...] = (
    Doc("PDF bomb: one FlateDecode stream shared by 20 pages (12 KB, 40 M characters)",
        _write("bomb.pdf", files.pdf_bomb)),
    Doc("PDF with 50,000 pages", _write("pages.pdf", files.pdf_many_pages)),
    Doc("PDF whose page tree contains itself", _write("loop.pdf", files.pdf_page_loop)),
    Doc("docx (ZIP) bomb: 236 KB unpacking to 200 MB", _write("report.docx", files.zip_bomb)),
    Doc("named pipe called notes.txt", _fifo, timeout_s=20),
    Doc("zero.txt, a symlink to /dev/zero", _dev_zero, timeout_s=20),
    Doc("symlink to another user's private file", _secret_file, as_other=True, timeout_s=30),
    Doc("text file just under the 10 MB limit",
        _write("huge.txt", lambda: files.prose(LIMIT - 1024))),
    Doc("text file over the 10 MB limit",
        _write("over.txt", lambda: files.prose(LIMIT + (2 << 20)))),
    Doc("binary garbage named .txt", _write("garbage.txt", lambda: files.garbage(1 << 20))),
    Doc("invalid UTF-8 without NUL bytes (.txt)",
        _write("latin.txt", lambda: files.high_bytes(64 << 10))),
    Doc("HTML nested 200,000 divs deep", _write("deep.html", files.nested_html)),
    Doc("Markdown nested 20,000 quotes deep", _write("deep.md", files.nested_markdown)),
    Doc("one 200 KB word", _write("word.txt", lambda: files.one_long_word(200 << 10))),
)


def _cli_as_other(report: IO[str], socket: str, path: str) -> dict[str, Any]:
    """In the uid 65534 child: what `hush summarize PATH` prints and returns."""
    from hush.tui.cli import main

    del report
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--socket", socket, "summarize", path])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def _summarize(lab: Lab, daemon: Hushd, doc: Doc, path: Path) -> tuple[int | None, str, str]:
    if not doc.as_other:
        return daemon.hush("summarize", str(path), timeout=doc.timeout_s)
    child = OtherUser(lab, _cli_as_other, str(daemon.socket), str(path))
    done = child.result(doc.timeout_s)
    return int(done["code"]), str(done["out"]), str(done["err"])


def judge_command(check: Check, code: int | None, out: str, err: str, timeout: float) -> None:
    if code is None:
        check.fail(f"no answer within {timeout:g} s")
    elif code == 0:
        if check.require(len(out) <= OUTPUT_BOUND, f"a summary of {len(out):,} characters"):
            check.note(f"bounded summary ({len(out):,} characters)")
    elif check.require(err.startswith("hush:") and TRACEBACK not in err
                       and "internal error" not in err,
                       f"exit {code} without a clear message (a traceback or internal error)"):
        check.note(f"refused: {refusal_kind(err)}")


def _document(lab: Lab, daemon: Hushd, doc: Doc, index: int) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        if doc.as_other and not is_root():
            raise Skip("needs root to act as another user (uid 65534)")
        daemon.ensure()
        daemon.calm()
        directory = lab.path(f"doc{index}", mode=0o755)
        canary = f"rt{secrets.token_hex(8)}"
        path = doc.make(directory, canary)
        mark = daemon.log_mark()
        with Sampler(daemon) as sampler:
            code, out, err = _summarize(lab, daemon, doc, path)
        judge_command(check, code, out, err, doc.timeout_s)
        sampler.judge(check, rss_bound_mb=RSS_BOUND_MB, latency_bound_ms=LATENCY_BOUND_MS)
        check.require(daemon.alive(), "hushd died")
        log = daemon.log_since(mark)
        check.require(canary not in out + err + log, "the private file's content was shown")
        for problem in log_problems(log):
            check.fail(problem)

    return run


# --- the inbox --------------------------------------------------------------------------------

INBOX_WAIT_S = 60.0


def _plant_outbox(_report: IO[str], outbox: str) -> bool:
    """uid 65534, before hushd starts: make the summaries directory of a shared inbox."""
    os.mkdir(outbox)
    os.chmod(outbox, 0o777)
    return True


def _plant_link(_report: IO[str], link: str, target: str) -> bool:
    os.symlink(target, link)
    return True


def _wait_for(paths: list[Path], timeout: float) -> Path | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for path in paths:
            if path.exists():
                return path
        time.sleep(0.2)
    return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _victim(lab: Lab, canary: str) -> Path:
    """A file of the daemon's own user that nobody else may write or read."""
    victim = lab.root / f"victim-{canary}"
    victim.write_text(f"The daemon user's own file. {canary}\n")
    os.chmod(victim, 0o600)
    return victim


def _outbox_symlink(lab: Lab) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        if not is_root():
            raise Skip("needs root to act as another user (uid 65534)")
        inbox = lab.path("inbox-shared", mode=0o777)
        outbox = inbox / "summaries"
        OtherUser(lab, _plant_outbox, str(outbox)).result(10)
        canary = secrets.token_hex(8)
        victim = _victim(lab, canary)
        before = _sha(victim)
        daemon = lab.daemon("inbox-shared", settings={"inbox_dir": str(inbox)})
        try:
            daemon.start(timeout=60)
        except RuntimeError:
            log = daemon.log_since(0)
            if check.require(TRACEBACK not in log, "hushd died at start with a traceback"):
                check.note("hushd refused to start with an outbox another user made")
            return
        try:
            link = outbox / f".doc.txt.summary.md.{daemon.pid}.tmp"
            OtherUser(lab, _plant_link, str(link), str(victim)).result(10)
            (inbox / "doc.txt").write_bytes(files.prose(4000))
            written = _wait_for([outbox / "doc.txt.summary.md", outbox / "doc.txt.error.txt"],
                                INBOX_WAIT_S)
            check.figures["outcome"] = written.name if written else None
            if check.require(_sha(victim) == before,
                             "the summary overwrote a file of the daemon's user through a "
                             "symlink another user planted in the outbox"):
                check.note("the planted symlink was not followed" if written else
                           "no summary was written into the other user's outbox")
        finally:
            daemon.stop()

    return run


def _inbox_cases(lab: Lab) -> list[Case]:
    inbox = lab.path("inbox", mode=0o777)
    outbox = inbox / "summaries"
    daemon = lab.daemon("inbox", settings={"inbox_dir": str(inbox)})
    daemon.start()
    cases = []
    try:
        def startup(check: Check) -> None:
            time.sleep(4)  # the start-up scan settles files for 2 s
            log = daemon.log_since(0)
            check.require(TRACEBACK not in log, "a traceback at every start")
            check.require(not (outbox / "summaries.error.txt").exists(),
                          "it wrote summaries.error.txt about its own outbox")
            check.note("the outbox inside the inbox is left alone")

        def bomb(check: Check) -> None:
            mark = daemon.log_mark()
            with Sampler(daemon) as sampler:
                (inbox / "bomb.pdf").write_bytes(files.pdf_bomb())
                written = _wait_for([outbox / "bomb.pdf.error.txt",
                                     outbox / "bomb.pdf.summary.md"], 120)
            check.figures["outcome"] = written.name if written else None
            if written is None:
                check.fail("no summary or error note within 120 s")
            else:
                check.note(f"wrote {written.name}")
            sampler.judge(check, rss_bound_mb=RSS_BOUND_MB, latency_bound_ms=LATENCY_BOUND_MS)
            for problem in log_problems(daemon.log_since(mark)):
                check.fail(problem)

        def dropped_link(check: Check) -> None:
            if not is_root():
                raise Skip("needs root to act as another user (uid 65534)")
            canary = secrets.token_hex(8)
            victim = _victim(lab, canary)
            OtherUser(lab, _plant_link, str(inbox / "loot.txt"), str(victim)).result(10)
            written = _wait_for([outbox / "loot.txt.summary.md", outbox / "loot.txt.error.txt"],
                                15)
            shown = written is not None and canary in written.read_text(errors="replace")
            check.require(written is None or written.name.endswith(".error.txt"),
                          "a summary of the link's target was written")
            check.require(not shown and canary not in daemon.log_since(0),
                          "the target's content was shown")
            check.note("the link was not followed")

        def fifo_then_file(check: Check) -> None:
            os.mkfifo(inbox / "pipe.txt")
            time.sleep(3)
            (inbox / "after.txt").write_bytes(files.prose(3000))
            written = _wait_for([outbox / "after.txt.summary.md", outbox / "after.txt.error.txt"],
                                INBOX_WAIT_S)
            if check.require(written is not None,
                             f"the inbox stopped: no note for the next file in {INBOX_WAIT_S:g} s"):
                check.note("the inbox went on to the next file")
            check.require(daemon.responsive(), "status stopped answering")

        # The bomb goes last: the inbox works one file at a time, and it may take the rest.
        for name, case in (("inbox: default outbox inside the inbox", startup),
                           ("inbox: symlink to a private file dropped in", dropped_link),
                           ("inbox: named pipe dropped in, then a document", fifo_then_file),
                           ("inbox: PDF bomb dropped in", bomb)):
            cases.append(play("documents", name, case, budget_s=180))
    finally:
        daemon.stop()
    return cases


def _warm_up(lab: Lab, daemon: Hushd) -> None:
    """The uid 65534 child runs the client in-process after fork, and may be unable to read
    the Python installation (under /root here): the client's path is walked once first, on a
    pipe it refuses, so every module it imports is loaded before the fork."""
    pipe = lab.path("warm-up") / "pipe.txt"
    os.mkfifo(pipe)
    mimetypes.guess_type(pipe.name)
    _cli_as_other(io.StringIO(), str(daemon.socket), str(pipe))


def run(lab: Lab) -> list[Case]:
    daemon = lab.daemon("documents")
    daemon.start()
    _warm_up(lab, daemon)
    try:
        cases = [play("documents", doc.name, _document(lab, daemon, doc, i),
                      budget_s=doc.timeout_s + 60) for i, doc in enumerate(DOCS)]
    finally:
        daemon.stop()
    cases.append(play("documents", "inbox: temp-file symlink in an outbox another user made",
                      _outbox_symlink(lab), budget_s=150))
    return cases + _inbox_cases(lab)
