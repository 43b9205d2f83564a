"""One driver per study: the lease in the store (rmaunet.store.StudyLease), on a folder and a bucket."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from local_ray import start_local_ray

from rmaunet.errors import StudyBusyError
from rmaunet.store import ResultsStore, StudyLease

TINY_SPEC = (
    "name: busy\nkind: table\nresources: {cpu: 1}\n"
    "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 8, augment: []}\n"
    "rows:\n  - label: CE\n"
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultsStore:
    if request.param == "local":
        return ResultsStore(tmp_path / "store")
    monkeypatch.setattr(StudyLease, "SETTLE_S", 0.2)
    return ResultsStore(request.getfixturevalue("s3_bucket") + "/store")


def test_a_second_driver_is_refused_naming_the_holder_until_the_first_releases(store: ResultsStore) -> None:
    # The refusal is one line with the holder's host, pid and how long ago it started and beat.
    first = StudyLease(store, "demo")
    first.acquire()
    try:
        with pytest.raises(StudyBusyError) as refused:
            StudyLease(store, "demo").acquire()
        line = str(refused.value)
        assert "\n" not in line and "study 'demo' is being run by another driver: host " in line
        assert f"pid {first.record()['pid']}, started " in line and "--take-over" in line
        assert re.search(r"UTC \(\d+ s ago\), last heartbeat \d+ s ago;", line)
        with StudyLease(store, "other study").hold():  # another study of the same store is free
            pass
    finally:
        first.release()
    assert first.current() is None
    with StudyLease(store, "demo").hold() as second:
        assert second.current()["owner"] == second.token


def test_a_dead_drivers_lease_is_taken_over_once_its_heartbeat_stops(store: ResultsStore) -> None:
    # A killed driver leaves its lease behind: refused while its last heartbeat is within its
    # ttl, taken over (saying so) once it is older.
    dead = StudyLease(store, "demo", ttl_s=60)
    record = dead.record()
    dead.storage.write_bytes(dead.name, json.dumps({**record, "heartbeat": time.time() - 30}).encode())
    with pytest.raises(StudyBusyError, match=r"last heartbeat \d+ s ago"):
        StudyLease(store, "demo").acquire()
    dead.storage.write_bytes(dead.name, json.dumps({**record, "heartbeat": time.time() - 61}).encode())
    messages: list[str] = []
    with StudyLease(store, "demo", log=messages.append).hold() as heir:
        assert heir.current()["owner"] == heir.token
    assert len(messages) == 1 and f"taking over study 'demo' from host {record['host']} pid" in messages[0]
    assert "its heartbeat stopped" in messages[0]


def test_the_heartbeat_keeps_a_lease_alive_and_notices_a_take_over(store: ResultsStore) -> None:
    # Beating every ttl/4, a lease outlives its ttl; --take-over replaces it, and the first
    # driver's next beat finds that out (and stops claiming the study).
    first = StudyLease(store, "demo", ttl_s=2)
    first.acquire()
    try:
        time.sleep(3)
        with pytest.raises(StudyBusyError):
            StudyLease(store, "demo").acquire()
        with StudyLease(store, "demo").hold(take_over=True) as second:
            deadline = time.monotonic() + 10
            while first.lost is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.lost is not None and first.lost["owner"] == second.token
            with pytest.raises(StudyBusyError, match="no longer holds its lease"):
                first.verify()
            second.verify()
    finally:
        first.release()  # not its lease any more: it leaves it alone


def test_a_take_over_outlasts_the_replaced_drivers_beat_landing_over_it(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a bucket there is no conditional write: the driver being taken over can beat between
    # its check and its write, over the new lease. That is the holder's last beat, not a second
    # taker: the take-over writes again. (A folder store decides under flock: no such window.)
    monkeypatch.setattr(StudyLease, "SETTLE_S", 0.2)
    store = ResultsStore(s3_bucket + "/store")
    first = StudyLease(store, "demo", ttl_s=3600)  # its own heartbeat stays quiet in this test
    first.acquire()
    second = StudyLease(store, "demo")
    write = second.storage.write_bytes
    beats: list[str] = []

    def then_the_first_beats(name: str, data: bytes) -> None:
        write(name, data)
        if not beats:
            beats.append(name)
            write(name, json.dumps(first.record()).encode())

    monkeypatch.setattr(second.storage, "write_bytes", then_the_first_beats)
    try:
        with second.hold(take_over=True):
            assert beats == ["demo.json"] and second.current()["owner"] == second.token
            with pytest.raises(StudyBusyError, match="no longer holds its lease"):
                first.verify()
    finally:
        first.release()


def test_of_drivers_starting_at_once_exactly_one_gets_the_lease(store: ResultsStore) -> None:
    # Four drivers race for one study: one wins, three are refused.
    start = threading.Barrier(4)
    won: list[StudyLease] = []
    refused: list[str] = []

    def driver() -> None:
        lease = StudyLease(store, "race")
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except StudyBusyError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=driver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3, refused
    assert won[0].current()["owner"] == won[0].token
    won[0].release()


def test_study_run_is_refused_before_it_plans_or_trains(store: ResultsStore, l4s_small: Path, tmp_path, capsys) -> None:
    # `rmaunet study run` of a study another driver holds: exit status 3, one line naming the
    # holder, nothing planned, trained or written (no Ray started: it would take seconds), not
    # even its spec over the running driver's (whose report reads it). Once the lease is free,
    # a run refused for a missing data folder (exit 2) writes nothing either.
    from rmaunet.cli import main

    spec = tmp_path / "busy.yaml"
    spec.write_text(TINY_SPEC)
    running = {"spec_text": "the running driver's spec", "overrides": ""}
    store.write_spec("busy", running)
    with StudyLease(store, "busy").hold():
        code = main(["study", "run", str(spec), "--data", str(l4s_small), "--storage", store.storage.uri])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1
    assert err.startswith("rmaunet: error: study 'busy' is being run by another driver: host ")
    assert store.storage.walk("trials") == [] and store.storage.walk("rows") == []
    assert store.read_spec("busy") == running
    code = main(["study", "run", str(spec), "--data", str(tmp_path / "nope"), "--storage", store.storage.uri])
    assert code == 2 and "nope" in capsys.readouterr().err
    assert store.read_spec("busy") == running and store.storage.walk("rows") == []


@pytest.mark.slow
def test_two_drivers_never_train_a_trial_twice_and_a_killed_ones_study_is_taken_over(
    l4s_small, tmp_path, capsys, request
):
    # A real `study run` trains; a second one at the same time is refused (exit 3) before it
    # plans anything. The first driver is then killed (SIGKILL, its trials die with it): the
    # study is refused while its lease's heartbeat is fresh, then taken over once it expires,
    # finished, and nothing the first driver finished is trained again.
    from ray_nodes import stop_processes

    (tmp_path / "first").mkdir()
    spec = tmp_path / "first" / "two.yaml"
    # One training at a time: the driver is killed between the first's end and the second's.
    two = TINY_SPEC.replace("busy", "two").replace("epochs: 1", "epochs: 3")
    two = two.replace("table\n", "table\nmax_concurrent: 1\n")
    spec.write_text(two + "  - {label: IoU, set: {loss: iou}}\n")
    storage = tmp_path / "store"
    env = {**os.environ, "RMAUNET_LEASE_TTL_S": "8", "RAY_AUTH_MODE": "token"}  # the runtime's token, as a client
    # The drivers join this test's Ray (killing one kills a driver, not a runtime that takes a
    # loaded machine long to start again).
    import ray

    ray.shutdown()
    start_local_ray()
    request.addfinalizer(ray.shutdown)
    address = ray.get_runtime_context().gcs_address

    def command(spec_path: Path) -> list[str]:
        data = ["--data", str(l4s_small), "--storage", str(storage), "--address", address]
        return [sys.executable, "-m", "rmaunet", "study", "run", str(spec_path), *data]

    from rmaunet.cli import main
    from rmaunet.studies.session import tracking_callbacks

    tracking_callbacks("warm-up")  # Ray Tune imported now: the second driver below answers at once
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command(spec), stdout=log, stderr=subprocess.STDOUT, env=env)
    lease = storage / "leases" / "two.json"
    deadline = time.monotonic() + 300
    while not lease.is_file() and time.monotonic() < deadline:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    capsys.readouterr()  # Ray's own start-up lines so far
    second = main(command(spec)[3:])  # the same command, in this process
    refusal = capsys.readouterr().err
    assert second == 3 and f"pid {first.pid}, started" in refusal and len(refusal.strip().splitlines()) == 1
    assert "study 'two' is being run by another driver" in refusal and first.poll() is None

    deadline = time.monotonic() + 600
    while not list((storage / "trials").glob("*/result.json")) and time.monotonic() < deadline:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)

    stop_processes(tmp_path / "first", kill_at_once=True)  # the driver (and anything it started)
    first.wait()
    log.close()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (storage / "trials").glob("*/result.json")}
    assert 1 <= len(finished) < 2 and lease.is_file()  # a killed driver leaves its lease behind

    copy = tmp_path / "two.yaml"  # the same study from another folder (stop_processes goes by folder)
    copy.write_text(spec.read_text())
    deadline = time.monotonic() + 120
    while True:
        heir = subprocess.run(command(copy), capture_output=True, text=True, timeout=600, env=env)
        if heir.returncode != 3 or time.monotonic() > deadline:
            break
        assert "is being run by another driver" in heir.stderr  # refused until the lease expires
        time.sleep(2)
    assert heir.returncode == 0, heir.stdout[-3000:] + heir.stderr[-3000:]
    assert "taking over study 'two' from host" in heir.stdout and "its heartbeat stopped" in heir.stdout
    assert "1 training to run, 1 reused" in heir.stdout
    rows = ResultsStore(storage).read("two")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"} and not lease.exists()
    for tid, mtime in finished.items():  # trained once: kept, not retrained
        assert (storage / "trials" / tid / "result.json").stat().st_mtime_ns == mtime
