"""`make lab` starts JupyterLab on notebooks/: run it headless on a loopback port and list the notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _make_lab(*options: str, lab_args: str) -> list[str]:
    """``make lab`` in this interpreter's environment, the stamp treated as up to date (no reinstall)."""
    venv = sys.prefix
    stamp = os.path.join(venv, ".installed")
    return [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        *options,
        "-o",
        stamp,
        "lab",
        f"VENV={venv}",
        f"LAB_ARGS={lab_args}",
    ]


def _stop(process: subprocess.Popen) -> None:
    """Terminates make and the server it started (their own process group); kills what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=5)


@pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None, reason="jupyterlab is not installed")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_the_notebooks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    token = secrets.token_hex(16)
    port = _free_port()
    lab_args = (
        f"--no-browser --ip={HOST} --port={port} --ServerApp.port_retries=0 "
        f"--IdentityProvider.token={token} --ServerApp.open_browser=False"
    )
    if os.geteuid() == 0:  # containers and CI runners often run as root, which the server refuses by default
        lab_args += " --allow-root"

    dry_run = subprocess.run(
        _make_lab("-n", lab_args=lab_args), env=env, capture_output=True, text=True, check=True
    ).stdout
    commands = dry_run.strip().splitlines()
    assert "touch " not in dry_run and " -m venv " not in dry_run, f"make lab would reinstall:\n{dry_run}"
    assert commands[-1].startswith(f"{sys.prefix}/bin/jupyter lab --notebook-dir=notebooks "), commands
    assert commands[-1].endswith(lab_args), commands

    log = tmp_path / "lab.log"
    url = f"http://{HOST}:{port}/api/contents?token={token}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, no proxy
    with log.open("wb") as output:
        process = subprocess.Popen(
            _make_lab("-s", lab_args=lab_args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        listing = None
        deadline = time.monotonic() + STARTUP_S
        while listing is None and time.monotonic() < deadline:
            assert process.poll() is None, f"make lab exited with {process.returncode}:\n{log.read_text()}"
            try:
                with opener.open(url, timeout=5) as response:
                    listing = json.load(response)
            except urllib.error.HTTPError:
                raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        assert listing is not None, f"no answer from {HOST}:{port} in {STARTUP_S:.0f} s:\n{log.read_text()}"
    finally:
        _stop(process)

    served = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    on_disk = {path.name for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk, "no notebooks under notebooks/"
    assert served == on_disk
