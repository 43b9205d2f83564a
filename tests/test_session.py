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
