"""The project as others install it: the wheel (specs inside, CLI works from anywhere), the
project image's Dockerfile and its build context."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from rmaunet.errors import SpecError
from rmaunet.specs import bundled_spec, bundled_spec_folder, bundled_spec_names

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from: the files the Dockerfile copies too.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "rmaunet")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _pip_installs(run: str) -> list[list[str]]:
    """The argument lists of every `pip install` in one RUN command."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words[2:] for words in commands if words[:2] == ["pip", "install"]]


def test_bundled_specs_are_found_inside_the_package():
    # Every spec of the repository's search_spaces/ is a bundled spec, found in the package folder.
    folder = bundled_spec_folder()
    assert (folder.parent.name, folder.name) == ("rmaunet", "search_spaces")
    assert bundled_spec_names() == sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))
    assert bundled_spec("demo") == bundled_spec("search_spaces/demo.yaml") == folder / "demo.yaml"
    assert (folder / "table11_references.csv").is_file()


def test_an_unknown_bundled_spec_names_the_ones_there_are():
    # A misspelt spec name fails with one line that lists the bundled names.
    with pytest.raises(SpecError, match=r"dmeo: no bundled spec of that name \(bundled: demo, "):
        bundled_spec("dmeo")


def test_top_level_search_spaces_is_a_link_to_the_package_folder():
    # The repository keeps one copy of the specs: search_spaces is a symbolic link (git mode 120000).
    link = REPO / "search_spaces"
    assert link.is_symlink() and link.resolve() == (REPO / "rmaunet" / "search_spaces").resolve()


def test_license_is_declared_the_pep_639_way():
    # An SPDX expression plus the license file; the build backend pinned to a release that reads them.
    project = _pyproject()
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (REPO / "LICENSE").read_text()
    backend = [Requirement(r) for r in project["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert backend and not backend[0].specifier.contains("76.9")


def test_dockerfile_builds_on_the_ray_image_that_matches_the_ray_pin():
    # FROM rayproject/ray:<the pinned Ray>-py<a supported Python>-gpu.
    project = _pyproject()["project"]
    base = next(args for op, args in _dockerfile_instructions() if op == "FROM")
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-gpu", base)
    assert match, base
    ray_pin = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "ray")
    assert ray_pin.specifier.contains(match.group(1))
    assert SpecifierSet(project["requires-python"]).contains(f"3.{match.group(2)}")


def test_dockerfile_installs_only_the_project_and_its_extras():
    # No second requirement list: every pip install names the project folder, with pyproject's extras.
    extras = _pyproject()["project"]["optional-dependencies"]
    runs = [args for op, args in _dockerfile_instructions() if op == "RUN"]
    installed_extras: set[str] = set()
    for run in runs:
        for args in _pip_installs(run):
            targets = [a for a in args if not a.startswith("-")]
            assert len(targets) == 1, args
            match = re.fullmatch(r"\.(?:\[([a-z0-9,-]+)\])?", targets[0])
            assert match, f"the Dockerfile installs {targets[0]!r}, not the project"
            installed_extras |= set(filter(None, (match.group(1) or "").split(",")))
    assert installed_extras, "the Dockerfile installs no extra"
    assert installed_extras <= set(extras), installed_extras - set(extras)
    assert {"gpu", "aws", "gcp"} <= installed_extras


def test_docker_build_context_is_an_allow_list_of_what_the_dockerfile_copies():
    # .dockerignore excludes everything first, then lets in exactly the sources the image copies.
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, args in _dockerfile_instructions():
        if op == "COPY":
            words = [w for w in args.split() if not w.startswith("--")]
            copied |= set(words[:-1])
    assert copied == allowed == set(SOURCES)
    for secret in (".venv", ".demo", ".env", "data", ".git"):
        assert not any(fnmatch.fnmatch(secret, p[1:]) for p in patterns if p.startswith("!")), secret


@pytest.mark.slow
def test_wheel_installs_and_plans_a_bundled_spec_outside_the_repository(tmp_path):
    # Build the wheel offline, install it into a fresh virtualenv (dependencies borrowed from this
    # interpreter's site-packages), and run `rmaunet study plan` on a bundled spec from another folder.
    from rmaunet.data.synthetic import write_landslide4sense

    source = tmp_path / "source"  # a clean copy: no stale build/ folder of the checkout leaks in
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next(dist.glob("rmaunet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "rmaunet/search_spaces/demo.yaml" in names and "rmaunet/search_spaces/table11_references.csv" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    # Listed after the venv's own site-packages, so the installed wheel wins over any other rmaunet.
    (venv_site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # Nothing of the checkout on the path: only what the wheel installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    data = write_landslide4sense(tmp_path / "data", n=12, seed=1, size=32)
    where = subprocess.run(
        [str(python), "-c", "import rmaunet.specs as s; print(s.bundled_spec('demo'))"],
        cwd=outside,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv_site), where
    plan = subprocess.run(
        [
            str(venv / "bin" / "rmaunet"),
            "study",
            "plan",
            where,
            "--data",
            str(data),
            "--storage",
            str(tmp_path / "store"),
            "--no-cost",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "[train]" in plan.stdout
