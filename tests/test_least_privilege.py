"""The clusters' cloud rights, as files (deploy/), against what Ray's providers really call.

The head's AWS policy must allow every EC2 call that Ray 2.60's AWS node provider makes on the
head for cluster.yaml (read from the installed provider's source, so a Ray upgrade that adds a
call fails here), plus what those calls imply (passing the workers' role, resolving a
`resolve:ssm:` AMI, tagging at launch), and nothing more. The workers get the bucket's prefixes
only, on AWS and on Google Cloud; the hand-made security group keeps the self-referencing rule."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "deploy" / "aws"
DOCS = (REPO / "docs" / "cluster.md").read_text()

# Provider methods that run only on the launcher (`ray up`, with your own credentials):
# ray.autoscaler._private.commands calls them; the head's autoscaler never does.
LAUNCHER_ONLY = {"bootstrap_config", "fillout_available_node_types_resources"}
# Calls behind a feature cluster.yaml leaves off: the method or action, and the config that turns it on.
OFF_IN_THIS_CONFIG = {
    "_check_ami_cwa_installation": "provider.cloudwatch (the CloudWatch agent)",
    "ec2:StopInstances": "provider.cache_stopped_nodes",
    "ec2:StartInstances": "provider.cache_stopped_nodes",
}


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _policy(name: str) -> list[dict]:
    statements = json.loads((AWS / name).read_text())["Statement"]
    return [{**s, "Action": [s["Action"]] if isinstance(s["Action"], str) else s["Action"]} for s in statements]


# The services whose rights a Ray node provider on AWS could need (CloudWatch is off, above),
# and the boto3 resource objects it holds: its nodes, EC2 instances. (Other resources' action
# names, such as `update` or `copy`, would match unrelated dict methods.)
SERVICES = ("ec2", "iam", "ssm")
RESOURCE_OBJECTS = {"ec2": ("Instance",)}


@cache
def _service_model(service: str) -> Any:  # botocore reads each model's JSON anew per session: once here
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@cache
def _boto_methods() -> dict[str, set[str]]:
    """boto3's method names (client methods, resource actions and collections) -> the IAM actions they call."""
    import boto3
    from botocore import xform_name

    methods: dict[str, set[str]] = {}

    def add(name: str, service: str, operation: str) -> None:
        methods.setdefault(xform_name(name), set()).add(f"{service}:{operation}")

    loader = boto3.session.Session()._loader
    for service in SERVICES:
        for operation in _service_model(service).operation_names:
            add(operation, service, operation)
        if service not in loader.list_available_services("resources-1"):
            continue
        resources = loader.load_service_model(service, "resources-1")
        objects = [resources["resources"][name] for name in RESOURCE_OBJECTS.get(service, ())]
        for owner in [resources["service"], *objects]:
            for name, spec in {**owner.get("actions", {}), **owner.get("hasMany", {})}.items():
                add(name, service, spec["request"]["operation"])
    return methods


def _head_calls() -> dict[str, set[str]]:
    """The AWS API calls reachable from the AWS node provider's methods on the head: each action
    and the provider functions it is reached through (followed into the package's other modules)."""
    import ray.autoscaler._private.aws.node_provider as module

    package = Path(module.__file__).parent
    trees = {path: ast.parse(path.read_text()) for path in sorted(package.glob("*.py"))}
    tree = trees[Path(module.__file__)]
    provider = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AWSNodeProvider")
    module_functions = [f for other in trees.values() for f in other.body if isinstance(f, ast.FunctionDef)]
    functions = {f.name: f for f in [*module_functions, *provider.body] if isinstance(f, ast.FunctionDef)}
    assert LAUNCHER_ONLY | {"_check_ami_cwa_installation"} <= set(functions), "Ray's provider changed"
    methods = _boto_methods()

    def reached(name: str, seen: set[str]) -> dict[str, set[str]]:
        calls: dict[str, set[str]] = {}
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                for action in methods[node.attr]:
                    calls.setdefault(action, set()).add(name)
            callee = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if isinstance(node, (ast.Attribute, ast.Name)) and callee in functions and callee not in seen:
                if callee in OFF_IN_THIS_CONFIG:
                    continue
                seen.add(callee)
                for action, via in reached(callee, seen).items():
                    calls.setdefault(action, set()).update(via)
        return calls

    calls: dict[str, set[str]] = {}
    for method in provider.body:
        if isinstance(method, ast.FunctionDef) and method.name not in LAUNCHER_ONLY | set(OFF_IN_THIS_CONFIG):
            for action, via in reached(method.name, {method.name}).items():
                calls.setdefault(action, set()).update(via)
    return calls


def _implied_by_the_config(config: dict) -> set[str]:
    """Rights RunInstances needs beyond itself for these node configs."""
    nodes = [t["node_config"] for t in config["available_node_types"].values()]
    implied = {"ec2:CreateTags"}  # Ray launches with TagSpecifications: tagging at launch is authorized apart
    if any("IamInstanceProfile" in n for n in nodes):
        implied.add("iam:PassRole")  # launching with an instance profile passes its role
    if any(str(n.get("ImageId", "")).startswith("resolve:ssm:") for n in nodes):
        implied.add("ssm:GetParameters")  # EC2 resolves the parameter with the caller's rights
    return implied


def _allowed_actions(statements: list[dict]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in s["Action"]}


def test_the_head_never_runs_the_launcher_only_methods():
    # `ray up` (commands.py) calls bootstrap_config and fillout_available_node_types_resources;
    # the head's autoscaler and monitor do not, so their calls are the launcher's to make.
    import ray.autoscaler._private as private

    folder = Path(private.__file__).parent
    assert all(name in (folder / "commands.py").read_text() for name in LAUNCHER_ONLY)
    for head_side in ("autoscaler.py", "monitor.py"):
        assert not any(name in (folder / head_side).read_text() for name in LAUNCHER_ONLY), head_side


def test_the_features_whose_calls_are_left_out_are_off():
    # cluster.yaml keeps no stopped nodes and runs no CloudWatch agent: their EC2 calls never happen.
    provider = _cluster()["provider"]
    assert provider["cache_stopped_nodes"] is False and "cloudwatch" not in provider


def test_head_policy_allows_exactly_what_rays_provider_calls_for_this_config():
    # Every EC2 call the provider makes on the head, and the rights those calls imply, is
    # allowed; nothing else is (no wildcard, no StopInstances for a cluster that keeps none).
    calls = _head_calls()
    print("Ray's AWS provider on the head:", {action: sorted(via) for action, via in sorted(calls.items())})
    assert {"ec2:RunInstances", "ec2:DescribeInstances", "ec2:TerminateInstances"} <= set(calls)
    required = set(calls) - set(OFF_IN_THIS_CONFIG) | _implied_by_the_config(_cluster())
    allowed = _allowed_actions(_policy("head-policy.json"))
    assert allowed == required, {"missing": required - allowed, "beyond": allowed - required}
    assert not any("*" in action for action in allowed)


def test_the_head_resolves_the_ami_parameter_it_names():
    # ssm:GetParameters is allowed on the very parameters the node configs' ImageIds resolve.
    config = _cluster()
    region = config["provider"]["region"]
    resources = [r for s in _policy("head-policy.json") if "ssm:GetParameters" in s["Action"] for r in [s["Resource"]]]
    for node_type in config["available_node_types"].values():
        image = node_type["node_config"]["ImageId"]
        assert image.startswith("resolve:ssm:")
        arn = f"arn:aws:ssm:{region}::parameter{image.removeprefix('resolve:ssm:')}"
        assert any(fnmatch.fnmatchcase(arn, r) for r in resources), arn


def test_the_head_ends_and_retags_only_this_clusters_nodes_and_passes_only_the_workers_role():
    # TerminateInstances and CreateTags on existing instances need Ray's cluster-name tag with
    # this cluster's name; PassRole names the workers' role, to EC2 only.
    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

    config = _cluster()
    statements = _policy("head-policy.json")
    for statement in statements:
        if "ec2:TerminateInstances" in statement["Action"]:
            assert statement["Condition"] == {
                "StringEquals": {f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}": config["cluster_name"]}
            }
        if statement["Action"] == ["ec2:CreateTags"]:
            assert statement["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    worker_profile = config["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]["Name"]
    (passing,) = [s for s in statements if "iam:PassRole" in s["Action"]]
    assert passing["Resource"] == f"arn:aws:iam::ACCOUNT_ID:role/{worker_profile}"
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_every_action_named_is_a_real_aws_action():
    # A misspelt action is silently useless in IAM: each is an API call of botocore's models, or
    # one of the few permission-only names.
    permission_only = {"iam:PassRole", "s3:ListBucket"}  # ListBucket authorizes ListObjects(V2)
    for name in ("head-policy.json", "worker-policy.json"):
        for action in _allowed_actions(_policy(name)) - permission_only:
            service, operation = action.split(":")
            assert operation in _service_model(service).operation_names, (name, action)


def test_workers_may_only_read_write_and_list_the_buckets_prefixes():
    # Objects under datasets/ (read) and results/ (read, write, delete), listing of those prefixes
    # only: no bucket settings, no other bucket, no s3:*.
    statements = _policy("worker-policy.json")
    object_rights = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
    for statement in statements:
        if statement["Action"] == ["s3:ListBucket"]:
            assert statement["Resource"] == "arn:aws:s3:::your-bucket"
            prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            assert {p.split("/")[0] for p in prefixes} == {"datasets", "results"}
        else:
            assert set(statement["Action"]) <= object_rights
            assert fnmatch.fnmatchcase(statement["Resource"], "arn:aws:s3:::your-bucket/*/*"), statement
            if statement["Resource"].startswith("arn:aws:s3:::your-bucket/datasets/"):
                assert statement["Action"] == ["s3:GetObject"]
    # The prefixes are the ones the docs and configs use.
    assert "s3://your-bucket/datasets/" in DOCS and "s3://your-bucket/results" in DOCS


def test_docs_attach_the_policy_files_and_no_broad_managed_policy():
    # The setup commands use the files in deploy/aws/, and no AWS-managed full-access policy.
    for name in ("head-policy.json", "worker-policy.json", "ec2-trust.json"):
        assert f"deploy/aws/{name}" in DOCS, name
    assert "FullAccess" not in DOCS and '"s3:*"' not in DOCS


def test_gcp_workers_get_object_rights_on_the_bucket_only():
    # The workers' custom role holds object permissions only; it is granted on the bucket (never
    # the project), and cluster-gcp.yaml's workers run as that account, not the head's.
    role = yaml.safe_load((REPO / "deploy" / "gcp" / "worker-role.yaml").read_text())
    assert role["includedPermissions"] and all(p.startswith("storage.objects.") for p in role["includedPermissions"])
    assert "gcloud storage buckets add-iam-policy-binding gs://your-bucket" in DOCS
    assert "roles/rmaunetWorker" in DOCS and "deploy/gcp/worker-role.yaml" in DOCS
    binds = [line for line in DOCS.splitlines() if "projects add-iam-policy-binding" in line]
    assert not any("rmaunet-worker" in line for line in binds), binds
    gcp = yaml.safe_load((REPO / "cluster-gcp.yaml").read_text())
    for name, node_type in gcp["available_node_types"].items():
        for account in node_type["node_config"].get("serviceAccounts", []):
            assert account["email"].startswith("rmaunet-worker@"), name


def test_security_group_recipe_adds_the_self_referencing_rule(tmp_path):
    # deploy/aws/security-group.sh, run with a stand-in `aws` that records its calls: the group
    # lets in all traffic from itself (Ray adds no rule to a group that has rules) and SSH from
    # the given range only.
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$2" in create-security-group) echo sg-0abc;; esac\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    script = AWS / "security-group.sh"
    run = subprocess.run(
        ["sh", str(script), "vpc-1", "203.0.113.0/24"], env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0 and run.stdout.strip() == "sg-0abc", run.stderr
    rules = [line.split("--ip-permissions ")[1] for line in log.read_text().splitlines() if "authorize" in line]
    assert sorted(rules) == [
        "IpProtocol=-1,UserIdGroupPairs=[{GroupId=sg-0abc}]",
        "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=203.0.113.0/24}]",
    ]
    assert "deploy/aws/security-group.sh" in DOCS


@pytest.mark.parametrize("name", ["head-policy.json", "worker-policy.json", "ec2-trust.json"])
def test_policy_files_are_iam_policy_documents(name):
    # The 2012-10-17 grammar: Version, and statements with Effect, Action and Resource (or Principal).
    document = json.loads((AWS / name).read_text())
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and "Action" in statement
        assert ("Resource" in statement) != ("Principal" in statement), statement
