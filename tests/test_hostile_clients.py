"""Clients that attack the daemon, here as another local user: the daemon must keep serving
everyone else, and say what it refused."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator

import pytest

from .conftest import Daemon, RawConnection

NOBODY, OTHER = 65534, 65533
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _open_to_everyone(daemon: Daemon, settings: str = "") -> None:
    """Socket mode 0666 and these uids allowed: only the daemon's own checks stand in between."""
    (daemon.config_dir / "hushd.yaml").write_text(
        f"socket_mode: 0666\nallow_uids: [{NOBODY}, {OTHER}]\n{settings}")
    daemon.start()
    daemon.socket.parent.chmod(0o755)
    daemon.socket.parent.parent.chmod(0o755)


@contextlib.contextmanager
def _as_user(uid: int, steps: Callable[[], object]) -> Iterator[object]:
    """Run `steps` in a child process that is `uid`; yield what it returned (as JSON) while
    the child still holds whatever it opened, and end the child when the block ends."""
    results_r, results_w = os.pipe()
    release_r, release_w = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads; the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # does socket calls, then _exit
        pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                result = steps()
            except BaseException as exc:
                result = {"crash": repr(exc)}
            os.write(results_w, json.dumps(result).encode() + b"\n")
            os.read(release_r, 1)
        finally:
            os._exit(0)
    os.close(results_w)
    os.close(release_r)
    try:
        with os.fdopen(results_r) as pipe:
            yield json.loads(pipe.readline())
    finally:
        os.write(release_w, b"x")
        os.close(release_w)
        os.waitpid(pid, 0)


# --- decisions for everyone -----------------------------------------------------------------

@needs_root
def test_only_the_service_owner_may_switch_the_model(tiny_daemon: Daemon) -> None:
    _open_to_everyone(tiny_daemon)
    use = b'{"id":"u","method":"models.use","params":{"name":"tiny"}}\n'

    def switch() -> object:
        conn = RawConnection(tiny_daemon.socket)
        conn.hello()
        conn.send(use)
        return conn.frame()

    with _as_user(NOBODY, switch) as answer:
        assert isinstance(answer, dict) and answer.get("code") == "forbidden", answer
        assert "only root or the daemon's own user" in answer["message"]
    assert "switched the model" not in tiny_daemon.log
    owner = RawConnection(tiny_daemon.socket)
    owner.hello()
    owner.send(use)
    assert owner.frame()["type"] == "done"
    assert f"uid {os.getuid()} switched the model to tiny" in tiny_daemon.log
