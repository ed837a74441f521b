"""The client distribution alone: stubs and translation, without the server (client/)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import importlib.util, json
from aigateway.v1 import chat_pb2, chat_pb2_grpc
from aigateway_json import chat_request_from_json, to_json
assert importlib.util.find_spec("bridge") is None, "the server came along"
data = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
request = chat_request_from_json(data)
assert isinstance(request, chat_pb2.CreateChatCompletionRequest)
assert to_json(request) == data, to_json(request)
assert chat_pb2_grpc.ChatServiceStub
print("ok")
"""


@pytest.mark.slow
def test_client_wheel_alone_round_trips_a_chat(tmp_path: Path) -> None:
    """Build the client wheel, install it alone into a fresh venv (its dependencies, grpcio and
    protobuf, are borrowed from this environment's site-packages, without its .pth files, so
    no editable install comes along), import the stubs and translate a chat both ways."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT / "client"),
        ],
        cwd=ROOT,
        check=True,
    )
    (wheel,) = tmp_path.glob("aigateway_client-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies only: a plain path entry, whose own .pth files (editable installs) are not read.
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            purelib,
            str(wheel),
        ],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
