"""bench/cluster_utilisation.py's arithmetic: node-seconds, training share, per-trial overhead, node gaps."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cluster_utilisation", ROOT / "bench" / "cluster_utilisation.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["cluster_utilisation"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)
TrialSpan = bench.TrialSpan


def _two_nodes() -> list:
    # Node a: [0, 10] trained 8, then [12, 22] trained 9. Node b: [1, 11] trained 7.
    return [
        TrialSpan("a", 12.0, 22.0, 9.0),
        TrialSpan("b", 1.0, 11.0, 7.0),
        TrialSpan("a", 0.0, 10.0, 8.0),
    ]


def test_share_is_training_over_nodes_times_study_span_and_driver_wall() -> None:
    # Span 0..22 on 2 nodes = 44 node-seconds; 24 s trained; the driver's 30 s gives 60 node-seconds.
    figures = bench.utilisation(_two_nodes(), nodes=2, driver_wall_s=30.0)
    assert figures["study_span_s"] == pytest.approx(22.0)
    assert figures["training_s"] == pytest.approx(24.0)
    assert figures["utilisation_span"] == pytest.approx(24.0 / 44.0)
    assert figures["utilisation_driver"] == pytest.approx(24.0 / 60.0)
    assert figures["node_seconds_span"] == pytest.approx(44.0)
    assert figures["trials_per_node"] == {"a": 2, "b": 1}


def test_overhead_is_the_median_of_span_minus_training() -> None:
    # Overheads 1, 3, 2: the median is 2, not the mean of a skewed set.
    assert bench.utilisation(_two_nodes(), nodes=2, driver_wall_s=22.0)["overhead_per_trial_s"] == pytest.approx(2.0)


def test_node_gaps_follow_each_node_in_start_order() -> None:
    # Only node a runs two trials: its gap is 12 - 10, whatever order the records came in.
    assert bench.node_gaps(_two_nodes()) == [pytest.approx(2.0)]
    assert bench.utilisation(_two_nodes(), nodes=2, driver_wall_s=22.0)["node_gap_s"] == pytest.approx(2.0)


def test_one_trial_per_node_has_no_gap() -> None:
    # No node ran a second trial: there is no gap to measure, reported as None.
    spans = [TrialSpan("a", 0.0, 5.0, 4.0), TrialSpan("b", 0.5, 5.5, 4.0)]
    assert bench.utilisation(spans, nodes=2, driver_wall_s=6.0)["node_gap_s"] is None


def test_idle_nodes_count_against_the_share() -> None:
    # A third node that ran nothing still costs node-seconds.
    two = bench.utilisation(_two_nodes(), nodes=2, driver_wall_s=22.0)["utilisation_span"]
    three = bench.utilisation(_two_nodes(), nodes=3, driver_wall_s=22.0)["utilisation_span"]
    assert three == pytest.approx(two * 2 / 3)


@pytest.mark.parametrize(
    ("spans", "nodes", "driver", "message"),
    [
        ([], 3, 10.0, "no trials"),
        ([TrialSpan("a", 0.0, 1.0, 1.0)], 0, 10.0, "nodes must be at least 1"),
        ([TrialSpan("a", 5.0, 1.0, 1.0)], 1, 10.0, "end before start"),
        ([TrialSpan("a", 0.0, 1.0, -1.0)], 1, 10.0, "negative training time"),
        ([TrialSpan("a", 0.0, 20.0, 5.0)], 1, 10.0, "shorter than the trials' span"),
    ],
)
def test_impossible_records_are_refused(spans: list, nodes: int, driver: float, message: str) -> None:
    # Records that cannot describe a real run fail with the reason instead of a wrong share.
    with pytest.raises(ValueError, match=message):
        bench.utilisation(spans, nodes=nodes, driver_wall_s=driver)
