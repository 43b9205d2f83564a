"""The KubeRay manifests (k8s/) against the KubeRay v1.7.0 CRD schemas, made strict so a
misspelt field fails here rather than being dropped silently by the API server, and what the
manifests run. (Their plain Kubernetes parts, sizes and named objects: tests/test_cloud_schemas.py.)"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the test extra")

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO.parent / "shared" / "fixtures" / "kuberay-crds"
MANIFESTS = {"RayCluster": "raycluster.yaml", "RayJob": "rayjob.yaml"}
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}

# Only the tests that read the CRDs need them; the rest run everywhere.
needs_crds = pytest.mark.skipif(
    not CRDS.is_dir(), reason=f"the KubeRay CRD fixtures are not here ({CRDS}: a copy of shared/ beside the repository)"
)


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists its fields.

    The API server drops (prunes) a field the schema does not list, unless the object says
    x-kubernetes-preserve-unknown-fields; `kubectl apply --validate=strict` refuses it. The same
    rule here: an object with `properties` and no `additionalProperties` gets `false`."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache  # each CRD is some 20,000 lines of YAML: read it once
def _schema(kind: str) -> dict:
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(version["schema"]["openAPIV3Schema"])


def _manifest(kind: str) -> dict:
    return yaml.safe_load((REPO / "k8s" / MANIFESTS[kind]).read_text())


@cache
def _validator(kind: str) -> Any:
    return jsonschema.Draft7Validator(_schema(kind))


def _errors(kind: str, manifest: dict) -> list[str]:
    validator = _validator(kind)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


@needs_crds
@pytest.mark.parametrize("kind", MANIFESTS)
def test_manifest_is_valid_against_the_kuberay_crd(kind):
    # Each manifest is a ray.io/v1 object the strict CRD schema accepts as it is.
    manifest = _manifest(kind)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", kind)
    assert _errors(kind, manifest) == []


@needs_crds
@pytest.mark.parametrize(
    "where, misspelt",
    [
        (("spec",), "authOption"),
        (("spec", "headGroupSpec"), "rayStartParam"),
        (("spec", "workerGroupSpecs", 0), "maxReplica"),
        (("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources"), "limit"),
    ],
)
def test_a_misspelt_field_is_rejected(where, misspelt):
    # The strict schema refuses a field the CRD does not know, at any depth.
    manifest = copy.deepcopy(_manifest("RayCluster"))
    node = manifest
    for key in where:
        node = node[key]
    node[misspelt] = node.get(misspelt + "s", {})
    errors = _errors("RayCluster", manifest)
    assert any(re.search(rf"'{misspelt}' was unexpected", e) for e in errors), errors


@needs_crds
def test_the_crd_spells_token_auth_as_the_manifests_do():
    # authOptions.mode is an enum of the CRD; the manifests ask for `token` on their clusters.
    crd_auth = _schema("RayCluster")["properties"]["spec"]["properties"]["authOptions"]
    assert "token" in crd_auth["properties"]["mode"]["enum"]
    assert _manifest("RayCluster")["spec"]["authOptions"] == {"mode": "token"}
    assert _manifest("RayJob")["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_the_job_runs_on_the_same_cluster_spec_as_the_raycluster():
    # One cluster definition: the RayJob's rayClusterSpec is k8s/raycluster.yaml's spec, field for field.
    assert _manifest("RayJob")["spec"]["rayClusterSpec"] == _manifest("RayCluster")["spec"]


def test_cluster_runs_the_project_image_with_a_gpu_worker_group():
    # Every container runs the project image; the GPU group asks for nvidia.com/gpu and autoscales from 0.
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    spec = _manifest("RayCluster")["spec"]
    assert spec["rayVersion"] == "2.60.0"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert container["image"].endswith(f"/rmaunet:{version}"), container["name"]
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    worker = gpu["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_job_entry_point_runs_a_bundled_study_on_a_bucket_every_pod_can_reach():
    # `python -m rmaunet study run` on a spec the image carries, with its data and its store in a
    # bucket (no result on one pod's disk), and every pod with a way to the bucket's credentials:
    # the service account (workload identity) and the optional Secret of storage keys.
    from rmaunet.specs import bundled_spec_names

    words = _manifest("RayJob")["spec"]["entrypoint"].split()
    assert words[:5] == ["python", "-m", "rmaunet", "study", "run"]
    spec = Path(words[5])
    assert spec.parent == Path("/home/ray/search_spaces") and spec.stem in bundled_spec_names()
    for option in ("--storage", "--data"):
        assert words[words.index(option) + 1].startswith("s3://your-bucket/"), option
    cluster = _manifest("RayJob")["spec"]["rayClusterSpec"]
    for pod in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]:
        assert pod["template"]["spec"]["serviceAccountName"] == "rmaunet"
        for container in pod["template"]["spec"]["containers"]:
            assert {"secretRef": {"name": "rmaunet-storage", "optional": True}} in container["envFrom"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"ln -s .*bundled_spec_folder.*\s+/home/ray/search_spaces", dockerfile)


def test_comments_name_the_kuberay_release_token_auth_needs():
    # authOptions works from KubeRay 1.5.1 on; the manifests and the guide say so.
    for name in MANIFESTS.values():
        assert "KubeRay operator >= 1.5.1" in (REPO / "k8s" / name).read_text(), name
    assert "1.5.1 or newer" in (REPO / "docs" / "cluster.md").read_text()
