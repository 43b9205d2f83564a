"""The package graph in docs/architecture.md is the real one, and the layering rules hold.

Every `import rmaunet.X` (module level or inside a function) counts as an edge between
areas: a top-level module (store, thresholds, …) or a subpackage (data, training, …).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rmaunet"
HEAVY = ("ray", "tensorflow", "keras")


def _imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(area -> areas it imports, area -> third-party roots it imports, with ray.tune as its own)."""
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        area = parts[0]  # "store" for store.py, "training" for training/loop.py
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "rmaunet"]
            else:
                continue
            for name in names:
                # errors is imported by nearly every area: the picture leaves it out.
                if name.startswith("rmaunet.") and name.split(".")[1] not in (area, "errors"):
                    edges[area].add(name.split(".")[1])
                elif name.split(".")[0] in HEAVY:
                    external[area].add("ray.tune" if name.startswith("ray.tune") else name.split(".")[0])
    return edges, external


def _documented() -> dict[str, set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no mermaid block"
    edges: dict[str, set[str]] = defaultdict(set)
    for src, dst in re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", block.group(1), re.M):
        edges[src].add(dst)
    return edges


def test_the_documented_graph_is_the_import_graph() -> None:
    real, _ = _imports()
    documented = _documented()
    areas = set(real) | set(documented)
    missing = {a: sorted(real[a] - documented[a]) for a in areas if real[a] - documented[a]}
    stale = {a: sorted(documented[a] - real[a]) for a in areas if documented[a] - real[a]}
    assert not missing and not stale, f"undocumented imports: {missing}; documented but absent: {stale}"


def test_studies_and_reporting_meet_only_in_the_store() -> None:
    real, _ = _imports()
    assert "reporting" not in real["studies"] and "studies" not in real["reporting"]
    assert "training" not in real["reporting"] and "store" in real["reporting"] and "store" in real["studies"]
    assert "studies" not in real["mapping"] and "store" in real["mapping"]  # mapping reads the store, not the engine


def test_the_layers_below_studies_never_import_ray_tune_and_the_model_layers_no_ray() -> None:
    _, external = _imports()
    for area in ("data", "models", "losses.py", "metrics.py", "config.py", "store.py", "thresholds.py"):
        assert "ray" not in external[area.removesuffix(".py")] and "ray.tune" not in external[area.removesuffix(".py")]
    assert "ray.tune" not in external["training"]
    assert not external["reporting"] & {"ray", "ray.tune", "tensorflow", "keras"}
