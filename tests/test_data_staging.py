"""Data under an object-store URI: fingerprinted by listing, staged once per node into its cache."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from rmaunet.data import fingerprint
from rmaunet.data.cache import CACHE_DIR_NAME
from rmaunet.data.staging import local_data, node_label, remote_fingerprint, stage
from rmaunet.errors import DataError
from rmaunet.storage import Storage

REPO = Path(__file__).resolve().parents[1]
DATASET = "landslide4sense"
NODE = re.escape(f"node {socket.gethostname()}: ")  # outside Ray: the host alone


@pytest.fixture(scope="module")
def tiny_l4s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic Landslide4Sense scenes of 16×16 (twelve files)."""
    from rmaunet.data.synthetic import write_landslide4sense

    # 12 scenes: enough that demo.yaml's batch of 8 fits its training split (plan refuses fewer).
    return write_landslide4sense(tmp_path_factory.mktemp("tiny_l4s"), n=12, seed=1, size=16)


def _upload(folder: Path, uri: str) -> list[str]:
    """Copy every file of `folder` under `uri`; their relative paths."""
    store = Storage(uri)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for name in names:
        store.upload(folder / name, name)
    return names


@pytest.fixture
def data_uri(s3_bucket: str, tiny_l4s: Path) -> str:
    """The tiny dataset uploaded to a fresh bucket, under the prefix l4s."""
    uri = f"{s3_bucket}/l4s"
    _upload(tiny_l4s, uri)
    return uri


def _count_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    fetched: list[str] = []
    original = Storage.download

    def counting(self: Storage, rel: str, target: Path) -> bool:
        fetched.append(rel)
        return original(self, rel, target)

    monkeypatch.setattr(Storage, "download", counting)
    return fetched


def test_staged_copy_has_the_remote_fingerprint(data_uri: str, tiny_l4s: Path, tmp_path: Path) -> None:
    # The listing's fingerprint is the staged folder's (its manifest keeps the objects' ETags), the copy is
    # byte for byte, the band cache is left out.
    Storage(data_uri).write_bytes(f"{CACHE_DIR_NAME}/landslide4sense-x/originals.npy", b"derived")
    expected = remote_fingerprint(data_uri, DATASET)
    staged = stage(data_uri, DATASET, expected, cache=tmp_path)
    assert staged == tmp_path / "data" / expected
    assert fingerprint(staged, DATASET) == expected
    assert [p.name for p in (staged / CACHE_DIR_NAME).iterdir()] == ["objects.json"]
    originals = sorted(p.relative_to(tiny_l4s) for p in tiny_l4s.rglob("*") if p.is_file())
    copied = sorted(p.relative_to(staged) for p in staged.rglob("*") if p.is_file() and CACHE_DIR_NAME not in p.parts)
    assert copied == originals
    assert all((staged / rel).read_bytes() == (tiny_l4s / rel).read_bytes() for rel in originals)
    assert remote_fingerprint(data_uri, "bijie") != expected  # the dataset's name is part of it


def test_identical_objects_uploaded_again_keep_the_fingerprint_and_the_copy(
    data_uri: str, tiny_l4s: Path, tmp_path: Path
) -> None:
    # A re-sync of the same bytes (new LastModified) keeps the fingerprint, so every trial and the staged copy
    # are reused; one changed object changes it.
    before = remote_fingerprint(data_uri, DATASET)
    staged = stage(data_uri, DATASET, before, cache=tmp_path)
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    _upload(tiny_l4s, data_uri)
    assert remote_fingerprint(data_uri, DATASET) == before
    assert stage(data_uri, DATASET, before, cache=tmp_path) == staged
    Storage(data_uri).write_bytes("TrainData/img/image_1.h5", b"other bytes")
    assert remote_fingerprint(data_uri, DATASET) != before


def test_a_staged_copy_in_use_is_never_evicted(data_uri: str, tmp_path: Path) -> None:
    # The stager pins its copy for as long as it lives: pruning the cache to nothing keeps it; unpinned, it goes.
    from rmaunet import node_cache

    staged = stage(data_uri, DATASET, remote_fingerprint(data_uri, DATASET), cache=tmp_path)
    assert node_cache.prune(0, tmp_path) == [] and staged.is_dir()
    node_cache.unpin(staged)
    assert [e.path for e in node_cache.prune(0, tmp_path)] == [staged] and not staged.exists()


@pytest.mark.timeout(120)
def test_a_late_stager_waits_for_the_copy_not_for_the_pins_of_its_users(data_uri: str, tmp_path: Path) -> None:
    # A process that found no copy just before another published it goes for the lock, which the publisher
    # now holds shared for as long as it lives (its pin): it must see the copy and return, not wait for the lock.
    from rmaunet.data import staging

    planned = remote_fingerprint(data_uri, DATASET)
    staged = stage(data_uri, DATASET, planned, cache=tmp_path)  # pinned by this process from now on
    staging._stage_once(data_uri, DATASET, planned, tmp_path / "data", staged)
    assert staged.is_dir()


def test_a_complete_copy_is_reused_without_touching_the_store(
    data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first stage downloads each file once; the second reads nothing from the store.
    expected = remote_fingerprint(data_uri, DATASET)
    fetched = _count_downloads(monkeypatch)
    first = stage(data_uri, DATASET, expected, cache=tmp_path)
    assert len(fetched) == len(set(fetched)) == 24  # 12 images, 12 masks

    def unreachable(*_: object) -> None:
        raise AssertionError("the store was read again")

    monkeypatch.setattr(Storage, "walk", unreachable)
    monkeypatch.setattr(Storage, "download", unreachable)
    assert stage(data_uri, DATASET, expected, cache=tmp_path) == first


_STAGER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rmaunet.data import staging
    from rmaunet.storage import Storage

    uri, fp, cache, barrier, me = sys.argv[1:6]
    original, fetched = Storage.download, []
    def slow(self, rel, target):
        fetched.append(rel)
        time.sleep(0.1)  # a download long enough that the other process arrives while it runs
        return original(self, rel, target)
    Storage.download = slow
    Path(barrier, me).touch()
    while len(list(Path(barrier).iterdir())) < 2:
        time.sleep(0.01)
    print(staging.stage(uri, "landslide4sense", fp, cache=cache), len(fetched))
    """
)


def test_concurrent_processes_on_one_node_download_once(data_uri: str, tmp_path: Path) -> None:
    # Two processes staging the same data at once: one downloads, the other waits and reuses its copy.
    expected = remote_fingerprint(data_uri, DATASET)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [data_uri, expected, str(tmp_path / "cache"), str(barrier)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STAGER, *args, str(me)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for me in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in outputs]
    results = [out.decode().split() for out, _ in outputs]
    assert {path for path, _ in results} == {str(tmp_path / "cache" / "data" / expected)}
    assert sorted(int(count) for _, count in results) == [0, 24]
    assert fingerprint(tmp_path / "cache" / "data" / expected, DATASET) == expected


def test_unreachable_endpoint_is_one_line_naming_node_and_uri(
    data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node that cannot reach the store says which node, which URI and why.
    from ports import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DataError, match=rf"^{NODE}{re.escape(data_uri)}: cannot list \(.*connect") as err:
        stage(data_uri, DATASET, "0" * 16, cache=tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data" / ("0" * 16)).exists()


def test_an_empty_or_missing_prefix_is_a_data_error(s3_bucket: str, tmp_path: Path) -> None:
    # Listing nothing under the URI (a typo in the prefix) is refused, naming the node and the URI.
    with pytest.raises(DataError, match=rf"^{NODE}{re.escape(s3_bucket)}/nothing: no data files there"):
        remote_fingerprint(f"{s3_bucket}/nothing", DATASET)
    with pytest.raises(DataError, match="no data files there"):
        stage(f"{s3_bucket}/nothing", DATASET, "0" * 16, cache=tmp_path)


def test_data_changed_since_planning_is_refused_and_nothing_staged(data_uri: str, tmp_path: Path) -> None:
    # Objects replaced after the study was planned: no copy is filed under the planned fingerprint.
    planned = remote_fingerprint(data_uri, DATASET)
    Storage(data_uri).write_bytes("TrainData/img/image_1.h5", b"replaced")
    changed = rf"{re.escape(data_uri)}: the data changed since the study was planned .*{planned}"
    with pytest.raises(DataError, match=changed):
        stage(data_uri, DATASET, planned, cache=tmp_path)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{planned}.lock"]


def test_data_changed_while_staging_leaves_no_copy(
    data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An object rewritten during the download: a DataError, and neither the copy nor its temporary folder remains.
    planned = remote_fingerprint(data_uri, DATASET)
    original = Storage.download

    def download_then_overwrite(self: Storage, rel: str, target: Path) -> bool:
        found = original(self, rel, target)
        if rel == "TrainData/mask/mask_3.h5":
            self.write_bytes(rel, b"a newer upload")
        return found

    monkeypatch.setattr(Storage, "download", download_then_overwrite)
    with pytest.raises(DataError, match=rf"{re.escape(data_uri)}: the data changed while it was being staged"):
        stage(data_uri, DATASET, planned, cache=tmp_path)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{planned}.lock"]


def test_a_dead_stagers_partial_copy_is_swept(data_uri: str, tmp_path: Path) -> None:
    # A temporary folder left by a killed process is removed by the next stager, which publishes a whole copy.
    planned = remote_fingerprint(data_uri, DATASET)
    leftover = tmp_path / "data" / f".tmp-999-deadbeef-{planned}"
    (leftover / "TrainData").mkdir(parents=True)
    staged = stage(data_uri, DATASET, planned, cache=tmp_path)
    assert not leftover.exists() and fingerprint(staged, DATASET) == planned


def test_a_cache_that_cannot_be_written_is_one_line_naming_node_and_folder(data_uri: str, tmp_path: Path) -> None:
    # A cache path that is a file (or a read-only or full disk): the node, the URI and the folder, not a traceback.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    with pytest.raises(DataError, match=rf"^{NODE}cannot stage {re.escape(data_uri)} into {re.escape(str(blocked))}"):
        stage(data_uri, DATASET, remote_fingerprint(data_uri, DATASET), cache=blocked)


def test_local_data_stages_a_uri_and_keeps_a_path(
    data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a trial calls: a URI becomes this node's cached copy (RMAUNET_CACHE_DIR), a path stays itself.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "node-cache"))
    planned = remote_fingerprint(data_uri, DATASET)
    assert local_data(data_uri, DATASET, planned) == tmp_path / "node-cache" / "data" / planned
    assert local_data(str(tmp_path), DATASET, planned) == tmp_path


def test_node_label_adds_the_ray_node_id_when_ray_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several simulated nodes share one host name: under Ray the label carries the node id's first 8 characters.
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert node_label() == socket.gethostname()
    context = types.SimpleNamespace(get_node_id=lambda: "abcd1234ef567890")
    ray = types.SimpleNamespace(is_initialized=lambda: True, get_runtime_context=lambda: context)
    monkeypatch.setitem(sys.modules, "ray", ray)
    assert node_label() == f"{socket.gethostname()}/abcd1234"


def test_a_study_planned_on_a_uri_files_its_trials_as_for_the_local_copy(
    data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning keeps the URI for the trials, stages the driver's copy, and gives the trial ids its local copy gives.
    from rmaunet.studies.plan import plan_study
    from rmaunet.studies.spec import load_spec

    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "driver-cache"))
    spec = load_spec(REPO / "search_spaces" / "demo.yaml", smoke=True)
    plan = plan_study(spec, data_uri, tmp_path / "store")
    assert plan.data == {DATASET: data_uri}
    staged = tmp_path / "driver-cache" / "data" / plan.fingerprints[DATASET]
    assert fingerprint(staged, DATASET) == plan.fingerprints[DATASET]
    local = plan_study(spec, staged, tmp_path / "store")
    assert [p.trial_id for p in local.planned] == [p.trial_id for p in plan.planned]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "rmaunet", *args], capture_output=True, text=True, timeout=180, env=env, cwd=REPO
    )


@pytest.mark.slow
def test_study_plan_takes_a_data_uri(data_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `rmaunet study plan SPEC --data s3://…` plans from the object store, also as NAME=URI.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "cache"))
    spec = "search_spaces/demo.yaml"
    out = _cli("study", "plan", spec, "--data", data_uri, "--storage", str(tmp_path / "store"), "--no-cost")
    assert out.returncode == 0, out.stderr
    assert "9 trainings to run" in out.stdout
    named = _cli(
        "study", "plan", spec, "--data", f"{DATASET}={data_uri}", "--storage", str(tmp_path / "store"), "--no-cost"
    )
    assert named.returncode == 0 and named.stdout == out.stdout, named.stderr


@pytest.mark.slow
def test_study_plan_on_a_missing_bucket_is_one_line_and_exit_2(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bucket that does not exist: exit 2 and one line naming the node, the URI and the store's answer.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "cache"))
    uri = "s3://missing-bucket-rmaunet/x"
    out = _cli("study", "plan", "search_spaces/demo.yaml", "--data", uri, "--storage", str(tmp_path / "store"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rmaunet: error: node {socket.gethostname()}: {uri}"), lines
    assert "bucket does not exist" in lines[0].lower()


def test_data_argument_keeps_a_uri_whole() -> None:
    # Path("s3://b/x") would read s3:/b/x: the CLI hands a URI on as the string it was given.
    from rmaunet.study_cli import _data_arg

    assert _data_arg(["s3://b/l4s"]) == "s3://b/l4s"
    named = _data_arg([f"{DATASET}=gs://b/l4s", "bijie=/data/bijie"])
    assert named == {DATASET: "gs://b/l4s", "bijie": Path("/data/bijie")}
