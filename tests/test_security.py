"""Transport security, who may use the bridge's credential, metadata, secrets.

Everything goes through real channels: TLS and mutual TLS with certificates the tests make
(trustme), access tokens in metadata, callers' own keys, and a non-loopback peer (the
machine's own network address) for the rule that lends the credential to loopback callers
only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from aigateway.v1 import chat_pb2, models_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.config import Config, ConfigError
from bridge.interceptors.access import TOKEN_KEY, token_digest
from bridge.server import assembly as server
from dev.upstream.faults import Status
from dev.upstream.server import DevUpstream
from tests import richstatus
from tests.conftest import DEV_KEY, bridge_config, stubs_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bridge-token-3f9a7c1e5d"
OTHER_TOKEN = "bridge-token-other-88d2"


@dataclass
class Pki:
    ca: trustme.CA
    ca_pem: bytes
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: bytes
    client_key: bytes


def _write(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    chain = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca = trustme.CA()
    client_ca = trustme.CA()
    server_cert, server_key = _write(
        server_ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "server"
    )
    client_ca_path = tmp_path / "client-ca.pem"
    client_ca_path.write_bytes(client_ca.cert_pem.bytes())
    client = client_ca.issue_cert("service-a.example")
    return Pki(
        ca=client_ca,
        ca_pem=server_ca.cert_pem.bytes(),
        server_cert=server_cert,
        server_key=server_key,
        client_ca=client_ca_path,
        client_cert=b"".join(blob.bytes() for blob in client.cert_chain_pems),
        client_key=client.private_key_pem.bytes(),
    )


@pytest.fixture
async def started() -> AsyncIterator[list[server.Bridge]]:
    """Bridges a test starts itself, stopped at the end."""
    bridges: list[server.Bridge] = []
    yield bridges
    for running in bridges:
        await running.stop(0)


async def _start(started: list[server.Bridge], config: Config) -> server.Bridge:
    running = await server.start(config)
    started.append(running)
    return running


def _tls_channel(
    port: int, pki: Pki, *, client: tuple[bytes, bytes] | None = None
) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem,
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def _token(value: str) -> tuple[tuple[str, str], ...]:
    return ((TOKEN_KEY, value),)


def _own_key(key: str = DEV_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _local_address() -> str | None:
    """This machine's own non-loopback IPv4 address, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


# ------------------------------------------------------------------------------- TLS


async def test_tls_serves_verified_clients_and_refuses_plaintext(
    upstream: DevUpstream, pki: Pki, started: list[server.Bridge]
) -> None:
    running = await _start(
        started, bridge_config(upstream, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    )
    async with _tls_channel(running.port, pki) as channel:
        models = await stubs_for(channel).models.ListModels(models_pb2.ListModelsRequest())
        assert models.data
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs_for(plain).models.ListModels(models_pb2.ListModelsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    upstream: DevUpstream, pki: Pki, started: list[server.Bridge]
) -> None:
    running = await _start(
        started,
        bridge_config(
            upstream,
            tls_cert=str(pki.server_cert),
            tls_key=str(pki.server_key),
            tls_client_ca=str(pki.client_ca),
            # Tokens configured too: a verified certificate alone must be enough.
            access_token_sha256=token_digest(TOKEN),
        ),
    )
    async with _tls_channel(running.port, pki, client=(pki.client_cert, pki.client_key)) as ch:
        reply = await stubs_for(ch).chat.CreateChatCompletion(_chat())
        assert reply.choices
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {DEV_KEY}"

    async with _tls_channel(running.port, pki) as no_cert:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs_for(no_cert).chat.CreateChatCompletion(_chat(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    stranger = trustme.CA().issue_cert("intruder.example")
    wrong = (
        b"".join(b.bytes() for b in stranger.cert_chain_pems),
        stranger.private_key_pem.bytes(),
    )
    async with _tls_channel(running.port, pki, client=wrong) as foreign:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs_for(foreign).chat.CreateChatCompletion(_chat(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(upstream.requests) == 1


def test_plaintext_on_a_network_address_with_a_credential_is_refused(pki: Pki) -> None:
    base: dict[str, Any] = {"listen": "0.0.0.0:50051", "upstream_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(ConfigError) as caught:
        Config.load(environ={}, api_key="sk-very-secret-key", **base)
    message = str(caught.value)
    assert "--allow-plaintext" in message and "--tls-cert" in message
    assert "sk-very-secret-key" not in message
    # Each way out works: explicit consent, TLS, no credential of its own, loopback.
    Config.load(environ={}, api_key="sk-very-secret-key", allow_plaintext=True, **base)
    Config.load(
        environ={},
        api_key="sk-very-secret-key",
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        **base,
    )
    Config.load(environ={}, **base)
    Config.load(environ={}, api_key="k", listen="[::1]:50051", upstream_url=base["upstream_url"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tls_cert": "CERT"}, "--tls-cert and --tls-key go together"),
        ({"tls_client_ca": "CA"}, "needs the server's own --tls-cert"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "cannot read"),
    ],
)
def test_tls_options_that_cannot_work_are_refused(
    pki: Pki, overrides: dict[str, str], expected: str
) -> None:
    paths = {"CERT": str(pki.server_cert), "CA": str(pki.client_ca)}
    values: dict[str, Any] = {k: paths.get(v, v) for k, v in overrides.items()}
    with pytest.raises(ConfigError, match=expected):
        Config.load(environ={}, **values)


# ------------------------------------------------------------------------------- access


def _chat() -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model="openai/gpt-4o-mini",
        messages=[chat_pb2.ChatMessage(role="user", content_text="hi")],
    )


async def test_access_tokens_guard_the_bridge_credential(
    upstream: DevUpstream, started: list[server.Bridge]
) -> None:
    running = await _start(
        started,
        bridge_config(
            upstream, access_token_sha256=f"{token_digest(OTHER_TOKEN)}, {token_digest(TOKEN)}"
        ),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        chat = stubs_for(channel).chat
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await chat.CreateChatCompletion(_chat())
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert TOKEN_KEY in (missing.value.details() or "")
        assert richstatus.of_error(missing.value).reason == "BRIDGE_TOKEN_MISSING"

        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await chat.CreateChatCompletion(_chat(), metadata=_token("guessed-token-123"))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert richstatus.of_error(wrong.value).info.domain == "bridge"
        assert richstatus.of_error(wrong.value).reason == "BRIDGE_TOKEN_INVALID"
        assert "guessed-token-123" not in (wrong.value.details() or "")
        assert "guessed-token-123" not in str(wrong.value.trailing_metadata())
        assert upstream.requests == []  # refused before anything reached the upstream

        for token in (TOKEN, OTHER_TOKEN):
            reply = await chat.CreateChatCompletion(_chat(), metadata=_token(token))
            assert reply.choices
        sent = upstream.requests[-1].headers
        assert sent["authorization"] == f"Bearer {DEV_KEY}"
        assert TOKEN_KEY not in sent and all(TOKEN not in v for v in sent.values())

        # Streams are guarded the same way.
        stream = chat.StreamChatCompletion(
            chat_pb2.StreamChatCompletionRequest(
                model="openai/gpt-4o-mini", messages=_chat().messages
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in stream:
                pass
        assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Health and reflection stay open: probes carry no token.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_callers_own_credentials_are_forwarded_or_refused(
    upstream: DevUpstream, started: list[server.Bridge]
) -> None:
    lenient = await _start(
        started,
        bridge_config(upstream, api_key="sk-bridge-own", access_token_sha256=token_digest(TOKEN)),
    )
    strict = await _start(
        started,
        bridge_config(
            upstream, caller_credentials="refuse", access_token_sha256=token_digest(TOKEN)
        ),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{lenient.port}") as channel:
        # No bridge token needed: the call spends its own key, which the upstream accepts.
        reply = await stubs_for(channel).chat.CreateChatCompletion(_chat(), metadata=_own_key())
        assert reply.choices
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {DEV_KEY}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict.port}") as channel:
        chat = stubs_for(channel).chat
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.CreateChatCompletion(_chat(), metadata=_own_key() + _token(TOKEN))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert richstatus.of_error(caught.value).reason == "CALLER_CREDENTIALS_REFUSED"
        assert "--caller-credentials" in (caught.value.details() or "")
        assert DEV_KEY not in (caught.value.details() or "")
        assert await chat.CreateChatCompletion(_chat(), metadata=_token(TOKEN))
    assert len(upstream.requests) == 2


async def test_without_tokens_the_credential_is_lent_to_loopback_callers_only(
    started: list[server.Bridge],
) -> None:
    address = _local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    async with DevUpstream(api_key=DEV_KEY) as upstream:
        guarded = await _start(
            started, bridge_config(upstream, listen="0.0.0.0:0", allow_plaintext=True)
        )
        open_ = await _start(
            started,
            bridge_config(upstream, listen="0.0.0.0:0", allow_plaintext=True, trust_network=True),
        )
        async with grpc.aio.insecure_channel(f"{address}:{guarded.port}") as remote:
            chat = stubs_for(remote).chat
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await chat.CreateChatCompletion(_chat())
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert richstatus.of_error(caught.value).reason == "NOT_A_LOCAL_CALLER"
            assert "--access-token-sha256" in (caught.value.details() or "")
            assert upstream.requests == []
            # A caller with its own key is still served from the network.
            assert await chat.CreateChatCompletion(_chat(), metadata=_own_key())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as local:
            assert await stubs_for(local).chat.CreateChatCompletion(_chat())
        async with grpc.aio.insecure_channel(f"{address}:{open_.port}") as remote:
            assert await stubs_for(remote).chat.CreateChatCompletion(_chat())
        assert len(upstream.requests) == 3


def test_token_digests_are_checked_at_load_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(environ={"BRIDGE_ACCESS_TOKEN_SHA256": "plain-token-not-a-digest"})
    assert "hash-token" in str(caught.value)
    assert "plain-token-not-a-digest" not in str(caught.value)


# ------------------------------------------------------------------------------- metadata


async def test_forwarded_metadata_allowlist_is_configurable(
    upstream: DevUpstream, started: list[server.Bridge]
) -> None:
    running = await _start(started, bridge_config(upstream, forward_metadata="X-Tenant, x-env"))
    metadata = (
        ("x-request-id", "req-1"),
        ("x-title", "my app"),
        ("ai-reporting-user", "u-1"),
        ("x-tenant", "acme"),
        ("x-env", "prod"),
        ("x-not-listed", "no"),
        ("cookie", "session=1"),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        await stubs_for(channel).chat.CreateChatCompletion(_chat(), metadata=metadata)
    sent = upstream.requests[-1].headers
    for key, value in metadata[:5]:
        assert sent[key] == value
    assert "x-not-listed" not in sent and "cookie" not in sent


@pytest.mark.parametrize(
    "key",
    [
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "grpc-timeout",
        ":authority",
        "content-length",
        "authorization",
        "host",
        TOKEN_KEY,
        "x-data-bin",
        "Bad Key",
    ],
)
def test_metadata_that_must_never_be_forwarded_is_refused_at_config_time(key: str) -> None:
    with pytest.raises(ConfigError, match="--forward-metadata: cannot forward"):
        Config.load(environ={"BRIDGE_FORWARD_METADATA": f"x-fine, {key}"})


async def test_upstream_response_headers_come_back_as_initial_metadata(
    upstream: DevUpstream, started: list[server.Bridge]
) -> None:
    headers = {
        "x-request-id": "req-from-upstream-7",
        "x-ratelimit-remaining-requests": "41",
        "x-ratelimit-reset-tokens": "6ms",
        "openai-processing-ms": "123",
        "set-cookie": "not=returned",
    }
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "openai/gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
    }
    upstream.program("openai/gpt-4o-mini", Status(200, completion, headers))
    running = await _start(started, bridge_config(upstream))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = stubs_for(channel).chat.CreateChatCompletion(_chat())
        assert (await call).choices[0].message.content == "ok"
        returned = dict(await call.initial_metadata())
    for key in (
        "x-request-id",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
        "openai-processing-ms",
    ):
        assert returned[key] == headers[key]
    assert "set-cookie" not in returned


# ------------------------------------------------------------------------------- secrets


def _run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_hash_token_prints_the_digest_of_stdin() -> None:
    result = _run("hash-token", stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert TOKEN not in result.stdout
    assert _run("hash-token", stdin="").returncode != 0


def test_config_command_masks_secrets() -> None:
    digest = token_digest(TOKEN)
    result = _run(
        "config",
        "--oidc-token",
        "oidc-secret-value-42",
        env={
            "AI_GATEWAY_API_KEY": "sk-live-secret-value-1",
            "BRIDGE_ACCESS_TOKEN_SHA256": digest,
        },
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["api_key"] == shown["oidc_token"] == shown["access_token_sha256"] == "***"
    for secret in ("sk-live-secret-value-1", "oidc-secret-value-42", digest):
        assert secret not in result.stdout + result.stderr
    bad = _run("config", "--max-attempts", "x", env={"AI_GATEWAY_API_KEY": "sk-live-2"})
    assert bad.returncode == 2 and "sk-live-2" not in bad.stdout + bad.stderr
