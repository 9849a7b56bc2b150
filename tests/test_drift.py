"""The drift watcher on the real kernel's inotify, in a temporary directory (no agent)."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import drift
from agent.drift import IN_Q_OVERFLOW, DriftWatcher, Inotify, InotifyUnavailable, keyfile_of
from store.follower import wait_for


class Checks:
    """Records every ``check`` call the watcher makes."""

    def __init__(self) -> None:
        self.calls: list[set[str] | None] = []
        self._lock = threading.Lock()

    def __call__(self, keyfiles: set[str] | None) -> None:
        with self._lock:
            self.calls.append(None if keyfiles is None else set(keyfiles))

    def seen(self, keyfile: str) -> bool:
        with self._lock:
            return any(call is not None and keyfile in call for call in self.calls)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    version = tmp_path / "versions" / "web" / "v1"
    version.mkdir(parents=True)
    (version / "cert.pem").write_text("one")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "web").symlink_to(version)
    return tmp_path


@pytest.fixture
def checks(tree: Path) -> Iterator[Checks]:
    recorded = Checks()
    watcher = DriftWatcher(tree, recorded, debounce_s=0.05)
    watcher.start()
    try:
        yield recorded
    finally:
        watcher.stop()


def test_keyfile_of_maps_versions_and_live_paths(tmp_path: Path) -> None:
    assert keyfile_of(tmp_path, str(tmp_path / "versions" / "web" / "v1" / "cert.pem")) == "web"
    assert keyfile_of(tmp_path, str(tmp_path / "live" / "web")) == "web"
    assert keyfile_of(tmp_path, str(tmp_path / "live" / ".web.tmp-abc")) == "web"
    assert keyfile_of(tmp_path, str(tmp_path / "live")) is None
    assert keyfile_of(tmp_path, "/elsewhere/versions/web") is None


def test_a_file_changed_by_hand_asks_for_a_check_of_its_keyfile(tree: Path, checks: Checks) -> None:
    (tree / "versions" / "web" / "v1" / "cert.pem").write_text("edited")
    assert wait_for(lambda: checks.seen("web"), 5)


def test_deleted_files_and_replaced_links_are_seen(tree: Path, checks: Checks) -> None:
    (tree / "versions" / "web" / "v1" / "cert.pem").unlink()
    assert wait_for(lambda: checks.seen("web"), 5)
    (tree / "live" / "web").unlink()
    (tree / "live" / "other").symlink_to(tree / "versions" / "web" / "v1")
    assert wait_for(lambda: checks.seen("other"), 5)


def test_directories_made_after_the_start_are_watched_too(tree: Path, checks: Checks) -> None:
    new = tree / "versions" / "api" / "v1"
    new.mkdir(parents=True)
    assert wait_for(lambda: checks.seen("api"), 5)
    checks.calls.clear()
    (new / "privkey.pem").write_text("key")  # a file in the new directory: its own watch reports it
    os.chmod(new / "privkey.pem", 0o644)
    assert wait_for(lambda: checks.seen("api"), 5)


def test_reading_a_deployed_file_is_not_a_change(tree: Path, checks: Checks) -> None:
    assert (tree / "live" / "web" / "cert.pem").read_text() == "one"  # a service reading it
    # A change elsewhere afterwards: once its check came, every event before it has been handled.
    (tree / "versions" / "second").mkdir()
    assert wait_for(lambda: checks.seen("second"), 5)
    assert not checks.seen("web")


def test_work_in_progress_is_not_watched_but_its_result_is(tree: Path, checks: Checks) -> None:
    staging = tree / "versions" / "web" / ".tmp-02-abc"
    staging.mkdir()
    (staging / "cert.pem").write_text("two")
    (tree / "live" / ".web.tmp-abc").symlink_to(staging)
    # Nothing asked for yet: a version being written is no drift. The marker proves the watcher has
    # handled every event before it.
    (tree / "versions" / "marker").mkdir()
    assert wait_for(lambda: checks.seen("marker"), 5)
    assert not checks.seen("web")
    # The finished version, renamed into place and switched to, is seen under its own names.
    staging.rename(tree / "versions" / "web" / "v2")
    assert wait_for(lambda: checks.seen("web"), 5)
    (tree / "versions" / "web" / ".tmp-03-def").mkdir()  # one found when the watch starts
    inotify = Inotify(tree)
    try:
        watched = set(inotify._paths.values())
        assert str(tree / "versions" / "web" / "v2") in watched
        assert not any(".tmp-" in path for path in watched)
    finally:
        inotify.close()


def test_lost_events_ask_for_a_check_of_everything(tree: Path) -> None:
    inotify = Inotify(tree)
    try:
        changed, overflow = inotify.process(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
        assert (changed, overflow) == (set(), True)
    finally:
        inotify.close()


def test_without_inotify_the_watcher_leaves_it_to_the_periodic_check(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(root: Path) -> Inotify:
        raise InotifyUnavailable(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(drift, "Inotify", refuse)
    watcher = DriftWatcher(tree, Checks())
    watcher.start()
    watcher.stop()
    assert "drift is checked periodically only: inotify_init1: Too many open files" in caplog.text
