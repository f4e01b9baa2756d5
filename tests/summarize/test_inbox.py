"""The watched inbox with real files: partial writes, bursts, renames, bad and vanished files."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hush.daemon.errors import HushError
from hush.daemon.summarize.inbox import Inbox
from hush.daemon.summarize.loaders import extract_text

SETTLE = 0.3


class Recorder:
    """Implements summarize_bytes with the real loader and a trivial 'summary'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.fail_on: str | None = None

    def __call__(self, data: bytes, name: str, _stop: threading.Event | None = None) -> str:
        with self.lock:
            self.calls.append((name, data))
        if name == self.fail_on:
            raise RuntimeError("simulated bug")
        document = extract_text(data, filename=name, max_bytes=1_000_000)
        return f"{len(document.text.split())} words, starting: {document.text.split()[0]}"

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "inbox", tmp_path / "outbox"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def inbox(dirs: tuple[Path, Path], recorder: Recorder) -> Iterator[Inbox]:
    box = Inbox(dirs[0], dirs[1], recorder, max_bytes=50_000, settle_seconds=SETTLE)
    box.start()
    yield box
    box.stop()


def outputs(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if not p.name.startswith("."))


def test_partial_writes_are_summarized_once_complete(inbox: Inbox, dirs: tuple[Path, Path],
                                                     recorder: Recorder) -> None:
    source, outbox = dirs
    parts = [b"First part of the field report. ", b"Second part arrives later. ",
             b"Final part ends it."]
    with (source / "report.txt").open("wb") as handle:
        for part in parts:
            handle.write(part)
            handle.flush()
            time.sleep(SETTLE / 2)  # slower than a burst, quicker than the settle time
    wait_for(lambda: (outbox / "report.txt.summary.md").exists())
    assert recorder.calls == [("report.txt", b"".join(parts))]
    summary = (outbox / "report.txt.summary.md").read_text()
    assert summary.startswith("# Summary of report.txt") and "14 words" in summary
    assert (outbox / "report.txt.summary.md").stat().st_mode & 0o777 == 0o600


def test_burst_of_twenty_files(inbox: Inbox, dirs: tuple[Path, Path],
                               recorder: Recorder) -> None:
    source, outbox = dirs
    for n in range(20):
        (source / f"note{n:02d}.md").write_text(f"# Note {n}\n\nBody of note number {n}.\n")
    wait_for(lambda: len(outputs(outbox)) == 20)
    assert outputs(outbox) == [f"note{n:02d}.md.summary.md" for n in range(20)]
    assert sorted(recorder.names()) == [f"note{n:02d}.md" for n in range(20)]


def test_unsupported_and_oversized_files_get_error_notes(inbox: Inbox, dirs: tuple[Path, Path],
                                                         recorder: Recorder) -> None:
    source, outbox = dirs
    (source / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (source / "huge.txt").write_bytes(b"word " * 20_000)  # 100 kB > max_bytes
    wait_for(lambda: len(outputs(outbox)) == 2)
    assert outputs(outbox) == ["huge.txt.error.txt", "photo.png.error.txt"]
    assert "PNG image" in (outbox / "photo.png.error.txt").read_text()
    assert ".pdf" in (outbox / "photo.png.error.txt").read_text()
    assert "limit is 50,000" in (outbox / "huge.txt.error.txt").read_text()
    assert recorder.names() == ["photo.png"]  # the oversized file was never read


def test_file_deleted_before_processing(inbox: Inbox, dirs: tuple[Path, Path],
                                        recorder: Recorder) -> None:
    source, outbox = dirs
    (source / "gone.txt").write_text("Here for a moment.")
    time.sleep(SETTLE / 3)
    (source / "gone.txt").unlink()
    (source / "after.txt").write_text("Still working afterwards.")
    wait_for(lambda: (outbox / "after.txt.summary.md").exists())
    time.sleep(SETTLE)
    assert outputs(outbox) == ["after.txt.summary.md"]
    assert recorder.names() == ["after.txt"]


def test_duplicates_and_renames(inbox: Inbox, dirs: tuple[Path, Path],
                                recorder: Recorder) -> None:
    source, outbox = dirs
    (source / "contract.txt").write_text("The same contract text.")
    wait_for(lambda: (outbox / "contract.txt.summary.md").exists())
    # A copy under another name: one summary, not two.
    (source / "contract copy.txt").write_text("The same contract text.")
    wait_for(lambda: inbox.processed == 2)
    assert outputs(outbox) == ["contract.txt.summary.md"]
    # A rename: the summary follows the file, the model is not asked again.
    (source / "contract.txt").rename(source / "signed contract.txt")
    wait_for(lambda: (outbox / "signed contract.txt.summary.md").exists())
    assert outputs(outbox) == ["signed contract.txt.summary.md"]
    assert recorder.names() == ["contract.txt"]


def test_moved_in_and_temporary_names(inbox: Inbox, dirs: tuple[Path, Path],
                                      tmp_path: Path, recorder: Recorder) -> None:
    source, outbox = dirs
    outside = tmp_path / "letter.txt"
    outside.write_text("Written elsewhere, then moved in.")
    os.rename(outside, source / "letter.txt")
    (source / "download.pdf.part").write_bytes(b"%PDF-1.4 partial")
    (source / "draft.txt.tmp").write_text("temporary")
    (source / ".hidden.txt").write_text("hidden")
    wait_for(lambda: (outbox / "letter.txt.summary.md").exists())
    (source / "draft.txt.tmp").rename(source / "draft.txt")
    wait_for(lambda: (outbox / "draft.txt.summary.md").exists())
    time.sleep(SETTLE)
    assert outputs(outbox) == ["draft.txt.summary.md", "letter.txt.summary.md"]


def test_a_failing_summarizer_does_not_stop_the_inbox(
        inbox: Inbox, dirs: tuple[Path, Path], recorder: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    source, outbox = dirs
    recorder.fail_on = "bad.txt"
    with caplog.at_level(logging.ERROR):
        (source / "bad.txt").write_text("Triggers a bug.")
        wait_for(lambda: (outbox / "bad.txt.error.txt").exists())
    assert "internal error" in (outbox / "bad.txt.error.txt").read_text()
    assert "Triggers a bug" not in caplog.text  # names in logs, never document text
    (source / "good.txt").write_text("Works again.")
    wait_for(lambda: (outbox / "good.txt.summary.md").exists())


def test_files_present_at_start_and_done_ones_skipped(dirs: tuple[Path, Path],
                                                      recorder: Recorder) -> None:
    source, outbox = dirs
    source.mkdir()
    (source / "waiting.txt").write_text("Arrived while the daemon was down.")
    first = Inbox(source, outbox, recorder, settle_seconds=SETTLE)
    first.start()
    try:
        wait_for(lambda: (outbox / "waiting.txt.summary.md").exists())
    finally:
        first.stop()
    second = Inbox(source, outbox, recorder, settle_seconds=SETTLE)
    second.start()
    time.sleep(SETTLE * 3)
    second.stop()
    assert recorder.names() == ["waiting.txt"]


@pytest.mark.parametrize("unsafe", ["writable", "symlink"])
def test_unsafe_outbox_is_refused(tmp_path: Path, recorder: Recorder, unsafe: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    source, outbox = tmp_path / "inbox", tmp_path / "outbox"
    if unsafe == "writable":
        outbox.mkdir()
        outbox.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        outbox.symlink_to(tmp_path / "elsewhere")
    box = Inbox(source, outbox, recorder, settle_seconds=SETTLE)
    with caplog.at_level(logging.ERROR):
        box.start()
    try:
        (source / "doc.txt").write_text("Never summarized.")
        time.sleep(SETTLE * 3)
    finally:
        box.stop()
    assert recorder.names() == []
    assert box.describe()["watching"] is False
    assert box.problem is not None and "outbox_dir" in box.problem
    assert box.problem in caplog.text
    assert list((tmp_path / "elsewhere").iterdir() if unsafe == "symlink" else
                outbox.iterdir()) == []


def test_directories_and_fifos_are_skipped_without_notes(
        inbox: Inbox, dirs: tuple[Path, Path], recorder: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    source, outbox = dirs
    with caplog.at_level(logging.WARNING):
        (source / "folder").mkdir()
        os.mkfifo(source / "pipe.txt")
        (source / "real.txt").write_text("An ordinary note.")
        wait_for(lambda: (outbox / "real.txt.summary.md").exists())
        time.sleep(SETTLE)
    assert outputs(outbox) == ["real.txt.summary.md"]
    assert recorder.names() == ["real.txt"]
    assert "Traceback" not in caplog.text and "unexpected failure" not in caplog.text


def test_a_summary_stopped_by_shutdown_leaves_no_error_note(dirs: tuple[Path, Path]) -> None:
    source, outbox = dirs
    started = threading.Event()

    def slow(_data: bytes, _name: str, stop: threading.Event) -> str:
        started.set()
        stop.wait(10)
        raise HushError("summary cancelled after 0 of 3 steps", code="cancelled")

    box = Inbox(source, outbox, slow, settle_seconds=SETTLE)
    box.start()
    (source / "long.txt").write_text("A long document.")
    assert started.wait(10)
    stopping = time.monotonic()
    box.stop()
    assert time.monotonic() - stopping < 5
    assert outputs(outbox) == []  # summarized at the next start instead
