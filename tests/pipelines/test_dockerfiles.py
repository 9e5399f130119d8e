"""What can be checked of the images without a Docker engine: copied files exist, dependencies install in a
layer before the code, pinned to what the tests run with, entrypoints import, no secrets, non-root user."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile.train", "Dockerfile.serve"])
def test_dockerfile_is_sound(name):
    path = ROOT / name
    ins = _instructions(path)
    assert ins[0][0] == "FROM"
    for op, rest in ins:
        if op == "COPY":
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{name}: COPY source {src} does not exist"
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{name}: must run as a non-root user"
    text = path.read_text()
    assert not re.search(r"(AWS_SECRET_ACCESS_KEY|PASSWORD|TOKEN)\s*=", text), f"{name} carries a secret"
    assert "packages_to_install" not in text


@pytest.mark.parametrize("name", ["Dockerfile.train", "Dockerfile.serve"])
def test_dependencies_install_before_the_code_is_copied(name):
    ins = _instructions(ROOT / name)
    code_copy = next(i for i, (op, rest) in enumerate(ins) if op == "COPY" and rest.split()[0] == "cmva")
    deps = [i for i, (op, rest) in enumerate(ins) if op == "RUN" and "-c constraints.txt" in rest and ".[" in rest]
    assert deps and deps[0] < code_copy, f"{name}: a code change must not reinstall the dependencies"
    after = " ".join(rest for op, rest in ins[code_copy:] if op == "RUN")
    assert "--no-deps" in after  # the code layer installs nothing else
    assert any(op == "ARG" and rest.startswith("VARIANT") for op, rest in ins)  # cpu / cuda, tagged apart


def _constraints() -> dict[str, str]:
    lines = (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_images_pin_the_versions_the_tests_run():
    """The lock (`make lock`) is the tested environment: a stale lock fails here, not in a cluster."""
    pins = _constraints()
    makefile = (ROOT / "Makefile").read_text()
    assert f"torch=={pins['torch']}" in makefile  # the image's torch = the CPU install the tests run
    for pkg in ("torch", "transformers", "peft", "trl", "kserve", "kfp", "sentence-transformers", "minio"):
        installed = importlib.metadata.version(pkg).split("+")[0]
        assert pins[pkg] == installed, f"{pkg}: lock {pins[pkg]}, tests run {installed}: run `make lock`"


def test_train_image_entrypoint_and_extras():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["cmva"] == "cmva.cli:app"
    ins = _instructions(ROOT / "Dockerfile.train")
    run = " ".join(rest for op, rest in ins if op == "RUN")
    for extra in re.findall(r"\.\[([a-z,]+)\]", run)[0].split(","):
        assert extra in meta["project"]["optional-dependencies"], extra
    assert importlib.import_module("cmva.cli").app is not None
    assert importlib.import_module("cmva.kfp_ops").train_agent_op is not None


def test_serve_image_entrypoint_roles():
    ins = _instructions(ROOT / "Dockerfile.serve")
    entry = [rest for op, rest in ins if op == "ENTRYPOINT"][-1]
    assert entry == '["python", "-m", "serving"]'  # the top-level KServe entrypoints, serving/<role>
    run = " ".join(rest for op, rest in ins if op == "RUN")
    assert '".[serve]"' in run and not re.search(r"\.\[[a-z,]*train", run)  # no training stack
    from cmva.serving import servers

    assert all(callable(getattr(servers, f"main_{r}")) for r in ("agent", "aggregator", "transformer"))
    for role in ("agent", "aggregator", "transformer"):
        assert importlib.import_module(f"serving.{role}.__main__") is not None
    usage = subprocess.run([sys.executable, "-m", "serving"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 1 and "agent|aggregator|transformer" in usage.stderr
