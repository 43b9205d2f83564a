"""Connecting a study to Ray (rmaunet.studies.session.connect_ray)."""

from __future__ import annotations

from typing import Any

import pytest


def test_without_an_address_a_study_starts_its_own_runtime_not_a_found_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # ray.init() with no address joins the cluster a `ray start` on this machine last recorded
    # (someone else's, perhaps); with none given, connect_ray asks for a local runtime of its own.
    import ray

    from rmaunet.studies import session

    calls: list[dict[str, Any]] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RMAUNET_RAY_START_TRIES", raising=False)  # the default of 3, not the suite's 6
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("C", (), {"get_node_id": lambda self: "ab" * 20})())
    messages: list[str] = []
    assert session.connect_ray(None, messages.append) is True
    assert calls[0]["address"] == "local" and messages[0].startswith("started a local Ray runtime")

    calls.clear()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert session.connect_ray(None, messages.append) is False
    assert calls[0]["address"] == "10.0.0.1:6379"


def test_a_local_runtime_that_misses_rays_30_s_is_started_again_after_its_leftovers_are_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ray gives a new node 30 s; on a loaded machine the first try can miss it. What that try
    # started is stopped, a line says so, and the next try runs; after every try, one line.
    import subprocess

    import ray

    from rmaunet.errors import RayStartError
    from rmaunet.studies import session

    started: list[subprocess.Popen] = []
    failures = [2]
    # Ray's two start-up timeouts, as it words them: the node's, then the dashboard's (its log's tail).
    slow = [
        "The current node timed out during startup. This could happen because …",
        "\nThe last 20 lines of /tmp/ray/session_x/logs/dashboard.log (it contains the error message from the "
        "dashboard): \n…",
    ]

    def init(**kwargs: Any) -> None:
        started.append(subprocess.Popen(["sleep", "60"]))  # stands for a half-started GCS / raylet
        if failures[0]:
            failures[0] -= 1
            raise Exception(slow[failures[0] % 2])

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RMAUNET_RAY_START_TRIES", raising=False)  # the default of 3, not the suite's 6
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("C", (), {"get_node_id": lambda self: "ab" * 20})())
    messages: list[str] = []
    try:
        assert session.connect_ray(None, messages.append) is True
        assert [p.wait(timeout=10) for p in started[:2]] == [-9, -9]  # the failed tries' processes
        assert started[2].poll() is None  # the runtime that started is left alone
        assert [m.split(";")[-1] for m in messages[:2]] == [" trying again (2 of 3)", " trying again (3 of 3)"]
        assert [m.split(" did not")[0] for m in messages[:2]] == [
            "the local Ray runtime's dashboard",
            "the local Ray runtime's node",
        ]
        assert messages[2].startswith("started a local Ray runtime")

        failures[0] = 3
        with pytest.raises(RayStartError, match=r"did not start in 3 tries \(the last: its node missed") as caught:
            session.connect_ray(None, messages.append)
        assert caught.value.exit_status == 1
    finally:
        for p in started:
            p.kill()
