"""Issue 13, item 9: no open admin routes (KServe's model repository load/unload refused, the server still
answers after any attempt); `cmva serve` binds loopback unless `--host` says otherwise, and SIGTERM to it
stops its servers too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cmva.serving.launcher import free_port_block


def _listening(pid: int) -> set[tuple[str, int]]:
    proc = psutil.Process(pid)
    connections = getattr(proc, "net_connections", proc.connections)("tcp")  # psutil < 6: connections
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}


@pytest.mark.parametrize("server, model", [("transformer", "cmva"), ("packed", "agents"), ("packed", "cmva")])
@pytest.mark.parametrize("action", ["unload", "load"])
def test_model_repository_routes_are_refused(packed, server, model, action):
    url = f"http://127.0.0.1:{packed.ports[server]}"
    r = httpx.post(f"{url}/v2/repository/models/{model}/{action}", timeout=30)
    assert r.status_code == 403, r.text
    assert "disabled" in r.json()["error"]
    assert httpx.get(f"{url}/v1/models/{model}", timeout=30).json()["ready"] is True
    body = {"instances": [{"question": "Can I borrow my flatmate's bike?", "profile": {"care": 1.0}}]}
    r = httpx.post(
        f"{packed.url}/v1/models/cmva:predict", json={**body, "parameters": {"max_new_tokens": 4}}, timeout=120
    )
    assert r.status_code == 200, r.text  # the whole chain still answers


def test_cmva_serve_chain_listens_on_loopback_only(packed):
    for name, proc in packed.processes.items():
        listening = _listening(proc.pid)
        assert ("127.0.0.1", packed.ports[name]) in listening, (name, listening)
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, (name, listening)


def test_server_host_option_binds_what_it_names(fake_predictor):
    url = fake_predictor("--host", "0.0.0.0")  # the later --host wins, as on a pod
    port = int(url.rsplit(":", 1)[1])
    pids = [p.pid for p in psutil.process_iter(["cmdline"]) if str(port) in " ".join(p.info["cmdline"] or [])]
    assert any(("0.0.0.0", port) in _listening(pid) for pid in pids)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_sigterm_to_cmva_serve_stops_its_servers(smoke_run, tmp_path):
    out, _, _ = smoke_run
    port = free_port_block(3)
    cli = Path(sys.executable).parent / "cmva"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [str(cli), "serve", "--artifacts", str(out), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    servers: list[psutil.Process] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and serve.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models/cmva", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        children = psutil.Process(serve.pid).children(recursive=True)
        servers = [c for c in children if "cmva.serving.servers" in " ".join(c.cmdline())]
        assert len(servers) == 2, (tmp_path / "serve.log").read_text()[-2000:]  # packed predictor + transformer
        assert {ip for s in servers for ip, _ in _listening(s.pid)} == {"127.0.0.1"}
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, [p.cmdline()[-4:] for p in alive]
        assert _port_free(port) and _port_free(port + 1)
    finally:
        if serve.poll() is None:
            serve.kill()
        for server in servers:
            if server.is_running():
                server.kill()
