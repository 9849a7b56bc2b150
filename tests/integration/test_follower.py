"""The changes follower against a real server: restarts, checkpoints, no loss, no double apply."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from agent.hostagent import BatchingCheckpoint
from store.couch import CouchClient, Database
from store.errors import Conflict
from store.follower import Change, ChangesFollower, LocalDocCheckpoint, run_in_thread, wait_for

pytestmark = pytest.mark.integration


class Recorder:
    """A handler that records every change it is given."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.ids.append(change.id)

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


def write_docs(db: Database, start: int, stop: int) -> None:
    db.bulk_docs([{"_id": f"doc-{i:04d}", "n": i} for i in range(start, stop)])


def make_follower(db: Database, recorder: Recorder) -> ChangesFollower:
    return ChangesFollower(
        db, recorder, LocalDocCheckpoint(db, "test-follower"), heartbeat=1.0, backoff=(0.05, 0.1, 0.2)
    )


@pytest.fixture
def db(couch_server: Any, db_name: str) -> Database:
    client = CouchClient(couch_server.admin_url)
    database = client.db(db_name)
    database.create()
    return database


def test_follower_applies_each_change_once_and_stops_promptly(db: Database) -> None:
    write_docs(db, 0, 30)
    recorder = Recorder()
    follower = make_follower(db, recorder)
    thread = run_in_thread(follower)
    assert follower.stats.caught_up.wait(10), "the follower never caught up"
    write_docs(db, 30, 60)
    assert wait_for(lambda: recorder.count() >= 60, 10)
    follower.stop()
    thread.join(5)
    assert not thread.is_alive(), "stop() did not end run()"
    assert sorted(recorder.ids) == [f"doc-{i:04d}" for i in range(60)]


def test_restarted_follower_resumes_from_its_checkpoint(db: Database) -> None:
    write_docs(db, 0, 20)
    first = Recorder()
    follower = make_follower(db, first)
    thread = run_in_thread(follower)
    assert wait_for(lambda: first.count() == 20, 10)
    follower.stop()
    thread.join(5)

    write_docs(db, 20, 35)
    second = Recorder()
    follower = make_follower(db, second)
    thread = run_in_thread(follower)
    assert wait_for(lambda: second.count() >= 15, 10)
    follower.stop()
    thread.join(5)
    assert sorted(second.ids) == [f"doc-{i:04d}" for i in range(20, 35)]


def test_follower_survives_a_server_restart_mid_stream(couch_server: Any, db: Database) -> None:
    if not couch_server.restartable:
        pytest.skip("the external CouchDB cannot be restarted by the test")
    recorder = Recorder()
    follower = make_follower(db, recorder)
    thread = run_in_thread(follower)
    assert follower.stats.caught_up.wait(10)
    writer_done = threading.Event()

    def writer() -> None:
        # Writes one document at a time so the restart lands in the middle of the stream.
        client = CouchClient(couch_server.admin_url, backoff=(0.05,) * 100)
        target = client.db(db.name)
        for i in range(200):
            try:
                target.put({"_id": f"doc-{i:04d}", "n": i})
            except Conflict:
                pass  # the write landed but its reply was lost in the restart; the retry saw it
        writer_done.set()

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    assert wait_for(lambda: recorder.count() >= 40, 20), "the follower did not see the first writes"
    couch_server.restart()
    writing.join(60)
    assert writer_done.is_set(), "the writer did not finish"
    assert wait_for(lambda: recorder.count() >= 200, 30), f"only {recorder.count()} of 200 changes applied"
    follower.stop()
    thread.join(5)
    counts = Counter(recorder.ids)
    assert sorted(counts) == [f"doc-{i:04d}" for i in range(200)], "a change was lost"
    assert max(counts.values()) == 1, f"applied twice: {[k for k, v in counts.items() if v > 1]}"
    assert follower.stats.connects >= 2, "the follower never reconnected"


def test_a_checkpoint_held_back_is_written_when_the_feed_goes_idle(db: Database, tmp_path: Any) -> None:
    # The agent's checkpoint writes at most once per interval; what it holds back must not wait for
    # the next change: the follower flushes it at the feed's next heartbeat.
    checkpoint = BatchingCheckpoint(tmp_path / "checkpoint.json", interval_s=3600)
    recorder = Recorder()
    follower = ChangesFollower(db, recorder, checkpoint, heartbeat=0.2, backoff=(0.05,))
    thread = run_in_thread(follower)
    try:
        assert follower.stats.caught_up.wait(10)
        write_docs(db, 0, 3)
        assert wait_for(lambda: recorder.count() == 3, 10)
        last = follower.since
        # Written within a few heartbeats, though the interval is an hour and no change follows.
        assert wait_for(lambda: checkpoint.load() == last, 5), (checkpoint.load(), last)
    finally:
        follower.stop()
        thread.join(5)
