"""What can be checked of the images without a Docker engine: copied files exist, entrypoints import,
no secrets, non-root user."""

from __future__ import annotations

import importlib
import re
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
    assert "cmva.serving" in entry
    run = " ".join(rest for op, rest in ins if op == "RUN")
    assert '".[serve]"' in run and "train" not in run  # the serving image carries no training stack
    from cmva.serving import servers

    assert all(callable(getattr(servers, f"main_{r}")) for r in ("agent", "aggregator", "transformer"))
