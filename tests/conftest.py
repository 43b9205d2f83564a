"""Shared fixtures: small synthetic datasets written once per session, quiet TensorFlow, a PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's own Ray runtimes load 2 cores to 20 and more while they start: every local
# runtime a test or a driver it spawns starts gets 6 of Ray's start-up windows, not 3.
os.environ.setdefault("RMAUNET_RAY_START_TRIES", "6")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def l4s_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic Landslide4Sense scenes of 32×32 in the official layout."""
    from rmaunet.data.synthetic import write_landslide4sense

    out = tmp_path_factory.mktemp("l4s_small")
    write_landslide4sense(out, n=60, seed=3, size=32)
    return out


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures: files written by other projects' tools, kept beside the repository,
    not in it. A plain clone has no such folder: the tests that read it skip, saying why."""
    folder = SHARED / "fixtures"
    if not folder.is_dir():
        pytest.skip(f"third-party fixtures not here: {folder} (a copy of shared/ beside the repository)")
    return folder


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server on 127.0.0.1 for the whole session; yields the client environment."""
    from s3_server import moto_available, s3_server

    if not moto_available():
        pytest.skip("moto's S3 server is not installed (pip install 'moto[server]'; part of the test extra)")
    with s3_server(tmp_path_factory.mktemp("moto")) as env:
        yield env


@pytest.fixture
def s3_bucket(s3_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the test S3 server, this process's AWS variables pointing at it;
    returns its URI (s3://name)."""
    import re
    import secrets

    from s3_server import make_bucket

    for key, value in s3_endpoint.items():
        monkeypatch.setenv(key, value)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + secrets.token_hex(3)
    make_bucket(s3_endpoint, name)
    return f"s3://{name}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server's database URL (tests/pg_server.py); skips, saying why,
    where PostgreSQL is not installed."""
    from pg_server import postgres_server, postgres_unavailable

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


# The longest files first, as measured (`--durations`): started last, one of them leaves the
# other process idle while it finishes alone.
LONGEST_FIRST = (
    "test_multinode.py",
    "test_study_engine.py",
    "test_training_distributed.py",
    "test_failures.py",
    "test_job_submit.py",
    "test_bench_overhead.py",
    "test_cluster_up.py",
    "test_object_store.py",
    "test_tracking.py",
    "test_mapping_cluster.py",
    "test_lease.py",
    "test_learning.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first, then other files with slow end-to-end tests, then the rest;
    each file's tests in their own order. Under `make test` each process takes whole files
    (pytest-xdist --dist loadfile --no-loadscope-reorder: this order, not xdist's by test count)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.path.name in LONGEST_FIRST:
            return (0, LONGEST_FIRST.index(item.path.name))
        return (1, 0) if item.path in slow_files else (2, 0)

    items.sort(key=rank)
