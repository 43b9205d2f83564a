"""The cluster configs against the clouds' own schemas and Ray's own scheduler, offline.

cluster.yaml's node configs go through botocore's RunInstances parameter validation (the EC2
service model botocore ships); cluster-gcp.yaml's through Compute Engine v1's `Instance` schema
(the discovery document google-api-python-client ships), read strictly; the Kubernetes objects
through kubernetes-validate for one Kubernetes version, strictly (the KubeRay CRDs themselves:
tests/test_k8s.py). Then Ray's autoscaler, given each prepared config, must launch a GPU node for
a GPU trial, and each GPU node type must declare what its machine really has."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KUBERNETES_VERSION = "1.33.0"  # a release GKE and EKS both run; kubernetes-validate ships its schema
# A trial of the bundled paper specs (resources: {cpu: 4, gpu: 1}), as Ray's scheduler sees it.
GPU_TRIAL = {"CPU": 4, "GPU": 1}

# The machines the configs name, as their clouds publish them (EC2's DescribeInstanceTypes
# fields; Compute Engine's machine types page): vCPUs, memory in MiB, GPUs.
AWS_INSTANCE_TYPES = {
    "m6i.2xlarge": {"InstanceType": "m6i.2xlarge", "VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 32768}},
    "g5.2xlarge": {
        "InstanceType": "g5.2xlarge",
        "VCpuInfo": {"DefaultVCpus": 8},
        "MemoryInfo": {"SizeInMiB": 32768},
        "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 1}]},
    },
}
GCP_MACHINE_TYPES = {
    "n2-standard-8": {"vcpus": 8, "memory_mib": 32768},
    "n1-standard-8": {"vcpus": 8, "memory_mib": 30720},
}
GCP_ACCELERATORS = {"nvidia-tesla-t4": "T4"}  # Compute Engine's name: the name Ray reports for the GPU
# A Kubernetes GPU node the worker pods must fit: GKE's n1-standard-8 with one T4 (the node of
# cluster-gcp.yaml). What GKE keeps for itself is in `_gke_allocatable`; the node's daemons (kube-proxy,
# logging, metrics, the GPU device plugin, CSI) request about this much on top.
K8S_GPU_NODE = {"vcpus": 8, "memory_gib": 30, "gpus": 1}
DAEMONS = {"cpu": 0.5, "memory_gib": 1.0}


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def _prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_load(name))
    validate_config(config)
    return config


def _kuberay_autoscaling_config() -> dict:
    """What Ray's KubeRay autoscaler derives from k8s/raycluster.yaml (it reads the RayCluster, not a file)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import prepare_config, validate_config

    ray_cr = _load("k8s/raycluster.yaml")
    ray_cr["metadata"]["namespace"] = "default"
    config = prepare_config(_derive_autoscaling_config_from_ray_cr(ray_cr))
    validate_config(config)
    return config


def _nodes_for(config: dict, demands: list[dict[str, float]]) -> dict[str, int]:
    """The node types and counts Ray's autoscaler launches for these demands on an empty cluster."""
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = functools.partial(
        _default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary(node_availabilities={})
    )
    nodes, _ = get_nodes_for(
        copy.deepcopy(config["available_node_types"]),
        {},
        config["head_node_type"],
        config["max_workers"],
        demands,
        scorer,
    )
    return dict(nodes)


CONFIGS = {
    "AWS": functools.partial(_prepared, "cluster.yaml"),
    "GCP": functools.partial(_prepared, "cluster-gcp.yaml"),
    "KubeRay": _kuberay_autoscaling_config,
}


@pytest.mark.parametrize("cloud", CONFIGS)
def test_rays_scheduler_launches_a_gpu_node_for_each_gpu_trial(cloud):
    # Four paper trials ({CPU: 4, GPU: 1} each) on an empty cluster: Ray's own autoscaler picks
    # four nodes of the on-demand GPU type (one GPU each; spot is off, the head trains nothing).
    config = CONFIGS[cloud]()
    nodes = _nodes_for(config, [GPU_TRIAL] * 4)
    gpu_types = {name for name, t in config["available_node_types"].items() if t["resources"].get("GPU")}
    print(f"{cloud}: Ray's scheduler launches {nodes} for 4 x {GPU_TRIAL}")
    assert sum(nodes.values()) == 4 and set(nodes) <= gpu_types, nodes


def test_a_gpu_node_type_without_declared_resources_launches_nothing():
    # The finding this file fixes: Ray's GCP provider fills in no resources, so GPU types that
    # declare `resources: {}` are never launched for a GPU trial.
    config = _prepared("cluster-gcp.yaml")
    for node_type in config["available_node_types"].values():
        if node_type["resources"].get("GPU"):
            node_type["resources"] = {}
    assert _nodes_for(config, [GPU_TRIAL] * 4) == {}


def test_aws_declared_resources_are_what_rays_provider_detects(monkeypatch):
    # Ray's AWS provider, fed the published instance types, detects exactly what cluster.yaml
    # declares for its GPU workers (CPUs, GPU, accelerator type, memory less the object store),
    # and keeps the head's CPU: 0.
    from ray.autoscaler._private.aws import node_provider

    monkeypatch.setattr(node_provider, "list_ec2_instances", lambda *a, **k: list(AWS_INSTANCE_TYPES.values()))
    config = _prepared("cluster.yaml")
    filled = node_provider.AWSNodeProvider.fillout_available_node_types_resources(copy.deepcopy(config))
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["InstanceType"] in AWS_INSTANCE_TYPES, name
        assert filled["available_node_types"][name]["resources"] == node_type["resources"], name
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1


def test_gcp_declared_resources_match_the_machine_types():
    # Each GCP GPU type declares its machine type's vCPUs, its accelerators, and its memory less
    # Ray's object store share (the rule Ray's AWS provider applies when it fills them in).
    from ray._private.ray_constants import DEFAULT_OBJECT_STORE_MEMORY_PROPORTION

    config = _prepared("cluster-gcp.yaml")
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        machine = GCP_MACHINE_TYPES[node["machineType"]]
        accelerators = node.get("guestAccelerators", [])
        gpus = {GCP_ACCELERATORS[a["acceleratorType"]]: a["acceleratorCount"] for a in accelerators}
        if name == config["head_node_type"]:
            assert not gpus and node_type["resources"] == {"CPU": 0}  # trains nothing
            continue
        memory = int(machine["memory_mib"] * 2**20 * (1 - DEFAULT_OBJECT_STORE_MEMORY_PROPORTION))
        expected = {"CPU": machine["vcpus"], "GPU": sum(gpus.values()), "memory": memory}
        expected.update({f"accelerator_type:{gpu}": 1 for gpu in gpus})
        assert node_type["resources"] == expected, name


# --- AWS: botocore's EC2 model -----------------------------------------------------------------


@functools.cache  # EC2's model is some 3 MB of JSON: read it once
def _ec2_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("ec2")


def _ec2_operation(name: str) -> Any:
    return _ec2_model().operation_model(name)


def _boto_errors(operation: str, params: dict) -> str:
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, _ec2_operation(operation).input_shape)
    return report.generate_report() if report.has_errors() else ""


def _run_instances_params(node_config: dict) -> dict:
    # Ray's provider calls RunInstances with the node config plus the counts and the tags.
    return {**node_config, "MinCount": 1, "MaxCount": 1}


@pytest.mark.parametrize("node_type", ["head", "gpu_worker", "gpu_worker_spot"])
def test_aws_node_configs_are_valid_run_instances_requests(node_type):
    # Every field of each node_config is a RunInstances parameter of the right type and shape.
    node_config = _prepared("cluster.yaml")["available_node_types"][node_type]["node_config"]
    assert _boto_errors("RunInstances", _run_instances_params(node_config)) == ""


@pytest.mark.parametrize(
    "change",
    [
        {"InstanceTypes": "g5.2xlarge"},  # misspelt
        {"BlockDeviceMappings": {"DeviceName": "/dev/sda1"}},  # a list written as an object
        {"InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {"MaxPrice": 1.5}}},  # a string as a number
    ],
)
def test_botocore_refuses_what_ec2_would(change):
    # The check is strict: an unknown field, a wrong shape or type is an error before any call.
    node_config = _prepared("cluster.yaml")["available_node_types"]["gpu_worker"]["node_config"]
    assert _boto_errors("RunInstances", _run_instances_params({**node_config, **change})) != ""


def test_aws_extra_security_group_rules_are_valid_ingress_rules():
    # Ray authorizes provider.security_group.IpPermissions on the group it creates, beside its own
    # rule for the cluster's traffic (the group itself as source).
    rules = _prepared("cluster.yaml")["provider"]["security_group"]["IpPermissions"]
    assert _boto_errors("AuthorizeSecurityGroupIngress", {"GroupId": "sg-0", "IpPermissions": rules}) == ""
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    made = _create_default_inbound_rules({"sg-0"}, rules)
    assert _boto_errors("AuthorizeSecurityGroupIngress", {"GroupId": "sg-0", "IpPermissions": made}) == ""
    assert any(r["IpProtocol"] == "-1" and r["UserIdGroupPairs"] == [{"GroupId": "sg-0"}] for r in made), made


@pytest.mark.parametrize("node_type", ["gpu_worker", "gpu_worker_spot"])
def test_the_run_instances_request_rays_provider_sends_is_valid(node_type):
    # Ray's AWS node provider launches a worker: the RunInstances request it builds from the node
    # config (its tags, counts and subnet added) passes the EC2 client's own parameter validation,
    # which runs before botocore's Stubber answers in place of EC2.
    from botocore.stub import Stubber
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    config = _prepared("cluster.yaml")
    provider = AWSNodeProvider({**config["provider"], "region": "us-west-2"}, config["cluster_name"])
    # What `ray up`'s bootstrap adds to every node config before the head ever launches one.
    node_config = {**config["available_node_types"][node_type]["node_config"], "SubnetIds": ["subnet-0"]}
    node_config |= {"SecurityGroupIds": ["sg-0"], "KeyName": "ray-autoscaler_us-west-2"}
    instance = {"InstanceId": "i-0", "State": {"Name": "pending"}, "StateReason": {"Message": "pending"}}
    with Stubber(provider.ec2_fail_fast.meta.client) as ec2:
        ec2.add_response("run_instances", {"Instances": [instance]})
        created = provider._create_node(node_config, {"ray-node-type": "worker"}, 1)
        ec2.assert_no_pending_responses()
    assert list(created) == ["i-0"]


# --- GCP: Compute Engine v1's discovery document -------------------------------------------------


@functools.cache
def _compute_schemas() -> dict[str, dict]:
    import googleapiclient

    document = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(document.read_text())["schemas"]


# Discovery documents write 64-bit integers as strings; the API takes a JSON number too.
_INTEGER_STRINGS = {"int64", "uint64"}


def _discovery_errors(value: Any, schema: dict, where: str) -> list[str]:
    """Where `value` breaks a discovery-document schema: unknown fields, types, enums, at any depth."""
    schema = _compute_schemas()[schema["$ref"]] if "$ref" in schema else schema
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: an object ({schema.get('id', 'map')}) expected, got {type(value).__name__}"]
        fields, extra = schema.get("properties", {}), schema.get("additionalProperties")
        errors = []
        for key, item in value.items():
            if key in fields:
                errors += _discovery_errors(item, fields[key], f"{where}.{key}")
            elif extra:
                errors += _discovery_errors(item, extra, f"{where}.{key}")
            else:
                errors.append(f"{where}.{key}: not a field of {schema.get('id', 'this object')}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: a list expected, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in _discovery_errors(item, schema["items"], f"{where}[{i}]")]
    if kind == "string" and schema.get("format") in _INTEGER_STRINGS:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())
    else:
        types = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
        a_bool_for_a_number = isinstance(value, bool) and kind != "boolean"
        ok = kind not in types or (isinstance(value, types[kind]) and not a_bool_for_a_number)
    if not ok:
        return [f"{where}: {kind} expected, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    return []


@pytest.mark.parametrize("node_type", ["head", "gpu_worker", "gpu_worker_spot"])
def test_gcp_node_configs_are_valid_compute_engine_instances(node_type):
    # Each node_config is the body of instances.insert: a valid Instance, field by field.
    node_config = _prepared("cluster-gcp.yaml")["available_node_types"][node_type]["node_config"]
    assert _discovery_errors(node_config, {"$ref": "Instance"}, node_type) == []


@pytest.mark.parametrize(
    "change, error",
    [
        ({"scheduling": [{"onHostMaintenance": "TERMINATE"}]}, "scheduling: an object (Scheduling) expected"),
        ({"scheduling": {"onHostMaintenence": "TERMINATE"}}, "not a field of Scheduling"),
        ({"scheduling": {"provisioningModel": "PREEMPTIBLE"}}, "'PREEMPTIBLE' is not one of"),
        ({"guestAccelerators": [{"acceleratorCount": "one"}]}, "integer expected"),
    ],
)
def test_the_instance_schema_refuses_what_compute_engine_would(change, error):
    # The reader is strict: a list for an object (the old `scheduling`), a misspelt field, a
    # value outside an enum and a wrong type are all refused.
    node_config = _prepared("cluster-gcp.yaml")["available_node_types"]["gpu_worker"]["node_config"]
    errors = _discovery_errors({**node_config, **change}, {"$ref": "Instance"}, "gpu_worker")
    assert any(error in e for e in errors), errors


def test_gcp_gpu_nodes_terminate_on_host_maintenance():
    # GPU VMs cannot live-migrate: Compute Engine refuses them unless onHostMaintenance is TERMINATE.
    for name, node_type in _prepared("cluster-gcp.yaml")["available_node_types"].items():
        node = node_type["node_config"]
        if node.get("guestAccelerators"):
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE", name


# --- Kubernetes: the objects and the pods, with Kubernetes' own schema ----------------------------


def _k8s_objects() -> list[dict]:
    paths = sorted((REPO / "k8s").glob("*.yaml"))
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_templates() -> dict[str, dict]:
    """Every pod template of the RayCluster and RayJob, as the v1 PodTemplate Kubernetes checks."""
    templates = {}
    for manifest in _k8s_objects():
        if manifest["kind"] not in ("RayCluster", "RayJob"):
            continue
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            name = f"{manifest['kind']}/{group.get('groupName', 'head')}"
            templates[name] = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": name.lower().replace("/", "-")},
                "template": group["template"],
            }
    return templates


def _kubernetes_errors(manifest: dict) -> str:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    return ""


def test_every_plain_kubernetes_object_is_valid():
    # The objects k8s/ defines besides the KubeRay ones (the service account) pass Kubernetes'
    # schema, strictly, and the pods' templates do too (containers, volumes, resources, env).
    plain = [m for m in _k8s_objects() if m["apiVersion"] != "ray.io/v1"]
    assert {m["kind"] for m in plain} >= {"ServiceAccount"}
    for manifest in [*plain, *_pod_templates().values()]:
        assert _kubernetes_errors(manifest) == "", manifest["metadata"]["name"]


def test_kubernetes_validate_is_strict():
    # A misspelt field in a pod template is refused, as `kubectl apply --validate=strict` would.
    template = copy.deepcopy(next(iter(_pod_templates().values())))
    template["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert "volumeMount" in _kubernetes_errors(template)


def test_every_object_the_pods_name_is_defined_or_optional():
    # The service account, claims, Secrets and ConfigMaps the pods name exist in k8s/, or the
    # pod starts without them (an optional Secret of storage keys, documented in docs/cluster.md).
    defined = {(m["kind"], m["metadata"]["name"]) for m in _k8s_objects()}
    docs = (REPO / "docs" / "cluster.md").read_text()
    for name, template in _pod_templates().items():
        pod = template["template"]["spec"]
        assert ("ServiceAccount", pod.get("serviceAccountName", "default")) in defined, name
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            assert claim is None or ("PersistentVolumeClaim", claim["claimName"]) in defined, (name, volume)
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                (kind, ref), *_ = ((k, v) for k, v in source.items() if k.endswith("Ref"))
                kind = {"secretRef": "Secret", "configMapRef": "ConfigMap"}[kind]
                if (kind, ref["name"]) not in defined:
                    assert ref.get("optional") is True and f"secret generic {ref['name']}" in docs, (name, ref)


def _quantity(text: str | int) -> float:
    """A Kubernetes quantity (8Gi, 500m, 6) in bytes or cores."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(text)
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _gke_allocatable(vcpus: int, memory_gib: float) -> dict[str, float]:
    """GKE's allocatable CPU and memory of a node (GKE's documented reservations and the 100 MiB
    eviction threshold)."""
    cpu_steps = [(1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025)]
    mem_steps = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02)]

    def reserved(total: float, steps: list[tuple[float, float]]) -> float:
        kept, left = 0.0, total
        for size, share in steps:
            kept += min(left, size) * share
            left -= min(left, size)
        return kept

    return {
        "cpu": vcpus - reserved(vcpus, cpu_steps),
        "memory": (memory_gib - reserved(memory_gib, mem_steps)) * 2**30 - 100 * 2**20,
    }


def test_gpu_worker_pods_fit_the_gpu_node_and_ray_sees_the_node():
    # A GPU worker pod's requests fit one GKE n1-standard-8 + T4 node beside its daemons (28Gi
    # did not: about 26.5 GiB is allocatable), and what Ray's KubeRay autoscaler derives from the
    # pod (CPUs, GPU, memory) is no more than the node has.
    node = _gke_allocatable(K8S_GPU_NODE["vcpus"], K8S_GPU_NODE["memory_gib"])
    assert 26 * 2**30 < node["memory"] < 27 * 2**30  # about 26.5 GiB, as measured on GKE (issue 20)
    for name, template in _pod_templates().items():
        if not name.endswith("/gpu"):
            continue
        requests = template["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert _quantity(requests["cpu"]) <= node["cpu"] - DAEMONS["cpu"], name
        assert _quantity(requests["memory"]) <= node["memory"] - DAEMONS["memory_gib"] * 2**30, name
        assert _quantity(requests["nvidia.com/gpu"]) == K8S_GPU_NODE["gpus"], name
    assert _quantity("28Gi") > node["memory"]
    ray_sees = _kuberay_autoscaling_config()["available_node_types"]["gpu"]["resources"]
    assert ray_sees["GPU"] == K8S_GPU_NODE["gpus"] and ray_sees["CPU"] <= K8S_GPU_NODE["vcpus"], ray_sees
    assert ray_sees["memory"] <= node["memory"], ray_sees


def test_the_node_cache_is_a_bounded_volume_inside_the_pods_disk_limit():
    # The node cache ($RMAUNET_CACHE_DIR) is an emptyDir with a sizeLimit, not the container's
    # writable layer, and the container's ephemeral-storage limit holds it (kubelet evicts a pod
    # whose volumes and layers together pass the sum of its limits).
    for name, template in _pod_templates().items():
        pod = template["template"]["spec"]
        container = pod["containers"][0]
        cache = next(e["value"] for e in container["env"] if e["name"] == "RMAUNET_CACHE_DIR")
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == cache)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        limit = _quantity(container["resources"]["limits"]["ephemeral-storage"])
        assert "medium" not in volume["emptyDir"] and _quantity(volume["emptyDir"]["sizeLimit"]) < limit, name
        assert _quantity(container["resources"]["requests"]["ephemeral-storage"]) == limit, name
