"""The bridge's configuration: one dataclass, built once from flags and environment.

Every option is declared once, as a field of `Config` with its flag, environment variable
and help text; `python -m bridge serve --help` and `python -m bridge config` are generated
from the same declarations. Nothing else in the package reads `os.environ`.
Precedence: command-line flag, then environment variable, then the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_UPSTREAM = "https://ai-gateway.vercel.sh/v1"
DEFAULT_LISTEN = "127.0.0.1:50051"


def _opt(
    default: Any,
    help: str,
    *,
    env: str | None = None,
    flag: str | None = None,
    secret: bool = False,
) -> Any:
    return field(
        default=default,
        metadata={"help": help, "env": env, "flag": flag, "secret": secret},
    )


class ConfigError(ValueError):
    """A configuration that cannot work; the message says which option and why."""


@dataclass(frozen=True)
class Config:
    """Everything the bridge can be told. Built by `Config.load`, then passed down."""

    listen: str = _opt(
        DEFAULT_LISTEN, "Address to serve gRPC on, HOST:PORT (port 0 picks a free port).",
        env="BRIDGE_LISTEN",
    )
    upstream_url: str = _opt(
        DEFAULT_UPSTREAM,
        "Base URL of the OpenAI-compatible upstream, up to and including its /v1.",
        env="BRIDGE_UPSTREAM_URL", flag="--upstream",
    )
    api_key: str | None = _opt(
        None,
        "The bridge's own upstream credential, used for calls that bring no "
        "`authorization` metadata. Wins over the OIDC token when both are set.",
        env="AI_GATEWAY_API_KEY", secret=True,
    )
    oidc_token: str | None = _opt(
        None, "Vercel OIDC token, the bridge's credential when no API key is set.",
        env="VERCEL_OIDC_TOKEN", secret=True,
    )
    connect_timeout: float = _opt(
        10.0, "Seconds to wait for a connection to the upstream.",
        env="BRIDGE_CONNECT_TIMEOUT",
    )
    upstream_timeout: float = _opt(
        600.0,
        "Seconds an upstream exchange may take when the caller sets no deadline "
        "(for a stream: the longest silence between two events).",
        env="BRIDGE_UPSTREAM_TIMEOUT",
    )
    max_attempts: int = _opt(
        3, "Upstream attempts in all, the first included (1 disables retries).",
        env="BRIDGE_MAX_ATTEMPTS",
    )
    initial_backoff: float = _opt(
        0.5, "Seconds before the first retry when the upstream gives no retry-after.",
        env="BRIDGE_INITIAL_BACKOFF",
    )
    max_backoff: float = _opt(
        8.0, "Longest delay between two attempts, in seconds.", env="BRIDGE_MAX_BACKOFF",
    )
    max_connections: int = _opt(
        512, "Upstream HTTP connections kept at most (pool size).",
        env="BRIDGE_MAX_CONNECTIONS",
    )
    max_message_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest gRPC message received or sent, in bytes (embedding batches are large).",
        env="BRIDGE_MAX_MESSAGE_BYTES",
    )
    max_response_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest upstream response body (or single stream event) accepted, in bytes.",
        env="BRIDGE_MAX_RESPONSE_BYTES",
    )
    reflection: bool = _opt(
        True, "Serve gRPC server reflection.", env="BRIDGE_REFLECTION",
    )
    log_level: str = _opt(
        "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.", env="BRIDGE_LOG_LEVEL",
    )
    shutdown_grace: float = _opt(
        10.0,
        "Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are "
        "cancelled.",
        env="BRIDGE_SHUTDOWN_GRACE",
    )

    # ------------------------------------------------------------------ observability
    log_format: str = _opt(
        "text",
        "Log line format: `text` for a terminal, `json` (one object per line) for log "
        "collectors. Each call logs one line (logger bridge.access).",
        env="BRIDGE_LOG_FORMAT",
    )
    metrics_listen: str | None = _opt(
        None,
        "HOST:PORT to serve Prometheus metrics on, at /metrics (e.g. 0.0.0.0:9464); unset: "
        "no metrics endpoint.",
        env="BRIDGE_METRICS_LISTEN",
    )
    metrics_dir: str | None = _opt(
        None,
        "Directory where worker processes keep their metric values so that a scrape sums "
        "them (prometheus_client multiprocess mode); --workers sets one up when unset.",
        env="PROMETHEUS_MULTIPROC_DIR",
    )
    trace_exporter: str = _opt(
        "none",
        "Where OpenTelemetry spans go (needs the `otel` extra): `none` uses the process's "
        "global tracer provider (a no-op unless e.g. opentelemetry-instrument set one up), "
        "`console` prints them, `otlp` sends them to OTEL_EXPORTER_OTLP_ENDPOINT.",
        env="BRIDGE_TRACE_EXPORTER",
    )

    # ------------------------------------------------------------------ derived values

    @property
    def credential(self) -> str | None:
        """The bridge's own bearer credential: the API key wins over the OIDC token."""
        return self.api_key or self.oidc_token

    @property
    def credential_source(self) -> str | None:
        if self.api_key:
            return "--api-key / AI_GATEWAY_API_KEY"
        if self.oidc_token:
            return "--oidc-token / VERCEL_OIDC_TOKEN"
        return None

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.upstream_url).hostname or self.upstream_url

    # ------------------------------------------------------------------ building

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(cls))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per option; defaults stay None so the environment can fill them."""
        for f in cls.options():
            meta = f.metadata
            env = f" [env {meta['env']}]" if meta["env"] else ""
            default = "unset" if meta["secret"] or f.default is None else f.default
            text = f"{meta['help']} Default: {default}.{env}"
            flag = meta["flag"] or "--" + f.name.replace("_", "-")
            if f.type in ("bool", bool):
                parser.add_argument(
                    flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                    help=text,
                )
            else:
                parser.add_argument(flag, dest=f.name, default=None, help=text, metavar="VALUE")

    @classmethod
    def load(
        cls,
        args: argparse.Namespace | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Flags, then environment, then defaults; raises ConfigError with the option named."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in cls.options():
            raw: Any = overrides.get(f.name)
            if raw is None and args is not None:
                raw = getattr(args, f.name, None)
            if raw is None and f.metadata["env"]:
                raw = environ.get(f.metadata["env"]) or None
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        parts = urlsplit(self.upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"--upstream / BRIDGE_UPSTREAM_URL must be an http(s) URL, got {self.upstream_url!r}"
            )
        split_host_port(self.listen)
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        self._validate_observability()
        for name in ("connect_timeout", "upstream_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")

    def _validate_observability(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be 'text' or 'json', got {self.log_format!r}")
        if self.metrics_listen is not None:
            try:
                split_host_port(self.metrics_listen)
            except ConfigError:
                raise ConfigError(
                    f"--metrics-listen must be HOST:PORT, got {self.metrics_listen!r}"
                ) from None
            if self.metrics_listen == self.listen and not self.metrics_listen.endswith(":0"):
                raise ConfigError("--metrics-listen must differ from --listen")
        if self.trace_exporter not in ("none", "console", "otlp"):
            raise ConfigError(
                "--trace-exporter must be 'none', 'console' or 'otlp', got "
                f"{self.trace_exporter!r}"
            )

    def masked(self) -> dict[str, Any]:
        """The configuration as a dict, secrets replaced, for printing and logs."""
        out: dict[str, Any] = {}
        for f in self.options():
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = "***"
            out[f.name] = value
        return out


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{flag}: {raw!r} is not a valid {kind}") from None
    return raw


def split_host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') into its parts; ConfigError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)

