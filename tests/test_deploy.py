"""The container image and Kubernetes manifests agree with each other and with the bridge.

No cluster and no Docker daemon here: the manifests are parsed, cross-checked (ports, probe
services, labels, variable names) and their command and environment are run through the
bridge's own `config` command, the way the container would start. The Dockerfile's health
check runs for real against a live bridge.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

import bridge
from bridge.config import Config, split_host_port
from bridge.server import assembly as server
from dev.upstream.server import DevUpstream
from tests.conftest import bridge_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def load_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in load_documents() if d["kind"] == kind]


def deployment() -> dict[str, Any]:
    (found,) = by_kind("Deployment")
    return found


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment()["spec"]["template"]["spec"]["containers"]
    (found,) = containers
    return found


def container_env(secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment, with secretKeyRef values taken from `secrets`."""
    env: dict[str, str] = {}
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["key"]]
    return env


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        instruction, _, rest = text.partition(" ")
        lines.append((instruction.upper(), rest.strip()))
    return lines


def instruction(name: str) -> list[str]:
    return [rest for ins, rest in dockerfile() if ins == name]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


CONFIG_VARIABLES = {f.metadata["env"] for f in Config.options() if f.metadata["env"]}
SECRETS = {
    "ai-gateway-api-key": "sk-example-not-real",
    "access-token-sha256": hashlib.sha256(b"example-token").hexdigest(),
}


# ------------------------------------------------------------------------------ manifests


def test_manifests_parse_and_kustomization_lists_them() -> None:
    kinds = sorted(d["kind"] for d in load_documents())
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "Kustomization",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
    ]
    (kustomization,) = by_kind("Kustomization")
    listed = set(kustomization["resources"])
    files = {d["__file__"] for d in load_documents()} - {"kustomization.yaml"}
    # The example Secret holds placeholders: it is documentation, never applied.
    assert listed == files - {"secret.example.yaml"}


def test_selectors_match_the_pod_labels() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment()["spec"]["selector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in by_kind("Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in by_kind("PodDisruptionBudget")]
    for selector in selectors:
        assert selector and all(labels.get(k) == v for k, v in selector.items()), selector
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment()["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot be drained without an outage"


def test_ports_probes_and_prometheus_annotations_agree() -> None:
    env = container_env(SECRETS)
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert split_host_port(env["BRIDGE_LISTEN"])[1] == ports["grpc"]
    assert split_host_port(env["BRIDGE_METRICS_LISTEN"])[1] == ports["metrics"]
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container()[name]["grpc"]
        assert probe["port"] in (ports["grpc"], "grpc")
        # "" (the whole server) or a service the bridge reports health for.
        assert probe.get("service", "") in ("", *server.SERVICE_NAMES)
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    for service in by_kind("Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, port
            assert port["port"] == ports[port["targetPort"]]
    # Docker's image exposes the same ports with the same defaults.
    exposed = {int(p) for rest in instruction("EXPOSE") for p in rest.split()}
    assert exposed == set(ports.values())
    assert docker_env()["BRIDGE_LISTEN"] == env["BRIDGE_LISTEN"]
    assert docker_env()["BRIDGE_METRICS_LISTEN"] == env["BRIDGE_METRICS_LISTEN"]


def test_security_context_and_resources() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = pod["securityContext"]["runAsUser"]
    assert uid != 0
    assert instruction("USER") == [f"{uid}:{pod['securityContext']['runAsGroup']}"]
    ctx = container()["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    resources = container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    # The read-only root needs a writable /tmp (metrics files of --workers, Python's tempfile).
    assert any(m["mountPath"] == "/tmp" for m in container()["volumeMounts"])


def test_credential_comes_from_a_secret_and_every_variable_is_an_option() -> None:
    env_items = {item["name"]: item for item in container()["env"]}
    for secret in ("AI_GATEWAY_API_KEY", "BRIDGE_ACCESS_TOKEN_SHA256"):
        assert "value" not in env_items[secret], f"{secret} must not be a literal"
        assert env_items[secret]["valueFrom"]["secretKeyRef"]["name"] == "aigateway-bridge"
    (example,) = by_kind("Secret")
    keys = {i["valueFrom"]["secretKeyRef"]["key"] for i in env_items.values() if "valueFrom" in i}
    assert keys == set(example["stringData"])
    unknown = (set(env_items) | set(docker_env())) - CONFIG_VARIABLES
    assert unknown <= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                       "PIP_DISABLE_PIP_VERSION_CHECK"}, unknown  # fmt: skip


def test_termination_grace_covers_the_bridges_drain() -> None:
    env = container_env(SECRETS)
    pause = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = float(env["BRIDGE_SHUTDOWN_GRACE"])
    total = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert total > grace + float(pause[1])


def run_bridge(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m bridge ...` with exactly `env` (plus what Python needs to start)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_container_command_and_environment_validate() -> None:
    """The pod's args are a `python -m bridge` command; its env passes `bridge config`."""
    entrypoint = json.loads(instruction("ENTRYPOINT")[0])
    assert entrypoint == ["python", "-m", "bridge"]
    args = container()["args"]
    assert args[0] == "serve" and json.loads(instruction("CMD")[0]) == ["serve"]
    env = {**docker_env(), **container_env(SECRETS)}
    checked = run_bridge(["config", *args[1:]], env)
    assert checked.returncode == 0, checked.stderr
    shown = json.loads(checked.stdout)
    assert shown["listen"] == "0.0.0.0:50051"
    assert shown["metrics_listen"] == "0.0.0.0:9464"
    assert shown["log_format"] == "json"
    assert SECRETS["ai-gateway-api-key"] not in checked.stdout
    # The same environment without the plaintext opt-in is refused, naming the fix: the
    # manifest's choice is deliberate, not an accident of defaults.
    del env["BRIDGE_ALLOW_PLAINTEXT"]
    refused = run_bridge(["config", *args[1:]], env)
    assert refused.returncode == 2
    assert "--allow-plaintext" in refused.stderr


@pytest.mark.slow
async def test_docker_healthcheck_command_reports_a_live_bridge(upstream: DevUpstream) -> None:
    """The HEALTHCHECK's command, pointed at a real bridge, exits 0; at nothing, non-zero."""
    (rest,) = instruction("HEALTHCHECK")
    command = json.loads(rest.split("CMD", 1)[1].strip())
    assert command[:4] == ["python", "-m", "bridge", "health"]
    address = command[command.index("--address") + 1]
    assert split_host_port(address)[1] == split_host_port(docker_env()["BRIDGE_LISTEN"])[1]
    running = await server.start(bridge_config(upstream))
    try:
        live = list(command[3:])
        live[live.index("--address") + 1] = f"127.0.0.1:{running.port}"
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", *live)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        await running.stop(0)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", *live)
    assert await asyncio.wait_for(process.wait(), 60) != 0


def test_dockerignore_keeps_what_the_image_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # Every COPY source (all words but the destination): README.md too, since
    # pyproject.toml names it as the package's readme and the build reads it.
    copied = {src.rstrip("/") for rest in instruction("COPY") for src in rest.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "LICENSE", "bridge", "client", "generated"}
    assert not copied & ignored
    assert {".git", ".venv", "dev"} <= ignored


WORST_CASE_EXPANSION = 100
"""Memory of a parsed request per byte of it on the wire, at worst (2-byte empty `messages`
entries measured about 80: tests/test_access.py); docs/operations.md, "Sizing
--max-message-bytes"."""
BASELINE_MIB = 64
"""Resident memory of an idle bridge process, rounded up (about 53 MiB measured)."""


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_the_message_limit_fits_the_memory_limit_and_the_docs_agree() -> None:
    """Config default, manifest and docs/operations.md state one --max-message-bytes, sized
    to memory."""
    default = Config.load(environ={}).max_message_bytes
    manifest = int(container_env(SECRETS)["BRIDGE_MAX_MESSAGE_BYTES"])
    operations = (ROOT / "docs" / "operations.md").read_text()
    row = re.search(r"^\| `--max-message-bytes` \| (\d+) MiB \|", operations, re.MULTILINE)
    assert row, "the limits table of docs/operations.md lists --max-message-bytes"
    assert manifest == default == int(row.group(1)) * 1024 * 1024
    limit = _mib(container()["resources"]["limits"]["memory"])
    assert BASELINE_MIB + WORST_CASE_EXPANSION * manifest / 2**20 <= limit
    assert f"{limit:.0f} MiB memory limit" in operations


def test_manifest_image_tag_is_the_package_version() -> None:
    """The version is written once (pyproject.toml); the manifest's image tag must follow it."""
    images = [
        container["image"]
        for doc in load_documents()
        if doc.get("kind") == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert images == [f"aigateway-bridge:{importlib.metadata.version('aigateway-bridge')}"]
    assert bridge.__version__ == importlib.metadata.version("aigateway-bridge")
