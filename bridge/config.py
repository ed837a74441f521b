"""The bridge's configuration: one dataclass, built once from flags, environment and a file.

Every option is declared once, as a field of `Config` with its flag, environment variable
and help text; `python -m bridge serve --help`, `python -m bridge config` and the config
file's keys are generated from the same declarations. Nothing else in the package reads
`os.environ`. Precedence: command-line flag, then environment variable, then the config
file (`--config FILE` / `BRIDGE_CONFIG`, TOML, keys = option names), then the default.

To add an option: add a field below with `_opt(...)` (and a check in `validate`, in
bridge/config_checks.py, when some values cannot work); the flag, the variable, the help, the
file key and masking follow (bridge/config_sources.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from bridge import config_checks, config_sources
from bridge.config_checks import ConfigError as ConfigError
from bridge.config_checks import flag_of as flag_of
from bridge.config_checks import is_loopback_host as is_loopback_host
from bridge.config_checks import split_host_port as split_host_port
from bridge.config_checks import split_list
from bridge.upstream.retry import DEFAULT_POLICY, RetryPolicy

DEFAULT_UPSTREAM = "https://ai-gateway.vercel.sh/v1"
DEFAULT_LISTEN = "127.0.0.1:50051"

# Options with a fixed set of values: the type is the list, argparse offers it as `choices`,
# and `Config.validate` refuses anything else.
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
TraceExporter = Literal["none", "console", "otlp"]
CallerCredentials = Literal["allow", "refuse"]
EventLoop = Literal["auto", "uvloop", "asyncio"]


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


@dataclass(frozen=True)
class Config:
    """Everything the bridge can be told. Built by `Config.load`, then passed down."""

    listen: str = _opt(
        DEFAULT_LISTEN,
        "Address to serve gRPC on, HOST:PORT (port 0 picks a free port).",
        env="BRIDGE_LISTEN",
    )
    upstream_url: str = _opt(
        DEFAULT_UPSTREAM,
        "Base URL of the OpenAI-compatible upstream, up to and including its /v1.",
        env="BRIDGE_UPSTREAM_URL",
        flag="--upstream",
    )
    api_key: str | None = _opt(
        None,
        "The bridge's own upstream credential, used for calls that bring no "
        "`authorization` metadata. Wins over the OIDC token when both are set. Set it in "
        "the environment (AI_GATEWAY_API_KEY) or the config file (`api_key`), not with this "
        "flag: a command line is visible to every user of the machine (`ps`, /proc).",
        env="AI_GATEWAY_API_KEY",
        secret=True,
    )
    oidc_token: str | None = _opt(
        None,
        "Vercel OIDC token, the bridge's credential when no API key is set.",
        env="VERCEL_OIDC_TOKEN",
        secret=True,
    )
    connect_timeout: float = _opt(
        10.0,
        "Seconds to wait for a connection to the upstream.",
        env="BRIDGE_CONNECT_TIMEOUT",
    )
    upstream_timeout: float = _opt(
        600.0,
        "Seconds an upstream exchange may take when the caller sets no deadline "
        "(for a stream: the longest silence between two events).",
        env="BRIDGE_UPSTREAM_TIMEOUT",
    )
    # The retry defaults are RetryPolicy's (bridge/retry.py), written there once.
    max_attempts: int = _opt(
        DEFAULT_POLICY.max_attempts,
        "Upstream attempts in all, the first included (1 disables retries).",
        env="BRIDGE_MAX_ATTEMPTS",
    )
    initial_backoff: float = _opt(
        DEFAULT_POLICY.initial_backoff,
        "Seconds before the first retry when the upstream gives no retry-after.",
        env="BRIDGE_INITIAL_BACKOFF",
    )
    max_backoff: float = _opt(
        DEFAULT_POLICY.max_backoff,
        "Longest delay between two attempts, in seconds.",
        env="BRIDGE_MAX_BACKOFF",
    )
    max_connections: int = _opt(
        512,
        "Upstream HTTP connections kept at most (pool size).",
        env="BRIDGE_MAX_CONNECTIONS",
    )
    max_message_bytes: int = _opt(
        4 * 1024 * 1024,
        "Largest gRPC request message received, in bytes (judged by its wire size before "
        "it is parsed); answers are bounded by --max-response-bytes instead.",
        env="BRIDGE_MAX_MESSAGE_BYTES",
    )
    max_response_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest upstream response body (or single stream event) accepted, in bytes; the "
        "gRPC answer made from it may be up to twice that.",
        env="BRIDGE_MAX_RESPONSE_BYTES",
    )
    reflection: bool = _opt(
        True,
        "Serve gRPC server reflection.",
        env="BRIDGE_REFLECTION",
    )
    log_level: LogLevel = _opt(
        "INFO",
        "Log level (any case).",
        env="BRIDGE_LOG_LEVEL",
    )
    event_loop: EventLoop = _opt(
        "auto",
        "Event loop: `uvloop` (libuv's, less CPU per call and per streamed chunk), `asyncio` "
        "(the standard library's), or `auto`: uvloop when it is installed, else asyncio.",
        env="BRIDGE_EVENT_LOOP",
    )
    shutdown_grace: float = _opt(
        10.0,
        "Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cancelled.",
        env="BRIDGE_SHUTDOWN_GRACE",
    )

    # ------------------------------------------------------------------ observability
    log_format: LogFormat = _opt(
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
    trace_exporter: TraceExporter = _opt(
        "none",
        "Where OpenTelemetry spans go (needs the `otel` extra): `none` uses the process's "
        "global tracer provider (a no-op unless e.g. opentelemetry-instrument set one up), "
        "`console` prints them, `otlp` sends them to OTEL_EXPORTER_OTLP_ENDPOINT.",
        env="BRIDGE_TRACE_EXPORTER",
    )

    # ------------------------------------------------------------------ transport security
    tls_cert: str | None = _opt(
        None,
        "PEM certificate chain file: serve TLS with it (needs --tls-key).",
        env="BRIDGE_TLS_CERT",
    )
    tls_key: str | None = _opt(
        None,
        "PEM private key file of --tls-cert.",
        env="BRIDGE_TLS_KEY",
    )
    tls_client_ca: str | None = _opt(
        None,
        "PEM CA bundle: require every client to present a certificate it signed (mutual "
        "TLS; needs --tls-cert). A verified client may use the bridge's credential.",
        env="BRIDGE_TLS_CLIENT_CA",
    )
    allow_plaintext: bool = _opt(
        False,
        "Serve plaintext on a non-loopback address even though the bridge holds a "
        "credential of its own (refused otherwise).",
        env="BRIDGE_ALLOW_PLAINTEXT",
    )

    # ------------------------------------------------------------------ who may call
    access_token_sha256: str | None = _opt(
        None,
        "Comma-separated SHA-256 hex digests of bridge access tokens; a call relying on "
        "the bridge's credential must send one of the tokens as `x-bridge-token` metadata "
        "(or a verified client certificate). `python -m bridge hash-token` prints a digest.",
        env="BRIDGE_ACCESS_TOKEN_SHA256",
        secret=True,
    )
    caller_credentials: CallerCredentials = _opt(
        "allow",
        "Calls that bring their own `authorization` metadata: `allow` forwards it to the "
        "upstream, `refuse` rejects such calls with PERMISSION_DENIED.",
        env="BRIDGE_CALLER_CREDENTIALS",
    )
    trust_network: bool = _opt(
        False,
        "Let callers on other hosts use the bridge's credential without a token or client "
        "certificate when neither --access-token-sha256 nor --tls-client-ca is set "
        "(otherwise only loopback callers may). Only where reaching the port is itself "
        "the authorization.",
        env="BRIDGE_TRUST_NETWORK",
    )
    forward_metadata: str = _opt(
        "",
        "Comma-separated caller metadata keys forwarded as upstream request headers, in "
        "addition to x-request-id, traceparent, tracestate, http-referer, x-title, "
        "ai-reporting-tags and ai-reporting-user.",
        env="BRIDGE_FORWARD_METADATA",
    )

    # ------------------------------------------------------------------ limits and keepalive
    max_concurrent_streams: int = _opt(
        0,
        "Concurrent calls per client connection (HTTP/2 streams); 0: no limit. A limit "
        "makes clients that open more streams before they have read the server's HTTP/2 "
        "settings see some calls refused (UNAVAILABLE), so leave it 0 unless a proxy in front "
        "needs it.",
        env="BRIDGE_MAX_CONCURRENT_STREAMS",
    )
    keepalive_time: float = _opt(
        60.0,
        "Seconds of connection silence after which the server pings the client, so idle "
        "long streams survive load balancers and dead peers are noticed.",
        env="BRIDGE_KEEPALIVE_TIME",
    )
    keepalive_timeout: float = _opt(
        20.0,
        "Seconds to wait for a keepalive ping's answer before closing the connection.",
        env="BRIDGE_KEEPALIVE_TIMEOUT",
    )
    min_client_ping_interval: float = _opt(
        10.0,
        "Shortest interval between client keepalive pings the server accepts; clients "
        "pinging more often are disconnected (too_many_pings).",
        env="BRIDGE_MIN_CLIENT_PING_INTERVAL",
    )
    client_pings_without_calls: bool = _opt(
        True,
        "Accept client keepalive pings on connections with no call in flight.",
        env="BRIDGE_CLIENT_PINGS_WITHOUT_CALLS",
    )
    max_connection_age: float = _opt(
        1800.0,
        "Seconds after which a client connection is asked to reconnect (GOAWAY, +-10% "
        "jitter), so long-lived HTTP/2 connections get rebalanced across replicas; 0: never.",
        env="BRIDGE_MAX_CONNECTION_AGE",
    )
    max_connection_age_grace: float = _opt(
        600.0,
        "Seconds calls on a connection past --max-connection-age get to finish before the "
        "connection is closed.",
        env="BRIDGE_MAX_CONNECTION_AGE_GRACE",
    )

    # ------------------------------------------------------------------ processes and files
    workers: int = _opt(
        1,
        "Server processes sharing the port (SO_REUSEPORT, Linux), supervised by a parent "
        "that forwards SIGTERM/SIGINT.",
        env="BRIDGE_WORKERS",
    )
    worker_index: int | None = _opt(
        None,
        "Set by the --workers supervisor in each worker (0..N-1); not for users.",
        env="BRIDGE_WORKER_INDEX",
    )
    config_file: str | None = _opt(
        None,
        'TOML file of options (keys = option names, e.g. upstream_url = "..."); flags '
        "and environment variables win over it.",
        env="BRIDGE_CONFIG",
        flag="--config",
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
    def retry_policy(self) -> RetryPolicy:
        """The retry timing of these options; the rest of the policy keeps its defaults."""
        return dataclasses.replace(
            DEFAULT_POLICY,
            max_attempts=self.max_attempts,
            initial_backoff=self.initial_backoff,
            max_backoff=self.max_backoff,
        )

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.upstream_url).hostname or self.upstream_url

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def access_token_digests(self) -> tuple[bytes, ...]:
        """The configured access-token digests, as raw bytes for constant-time comparison."""
        return tuple(bytes.fromhex(d) for d in split_list(self.access_token_sha256 or ""))

    @property
    def extra_forwarded_metadata(self) -> frozenset[str]:
        return frozenset(k.lower() for k in split_list(self.forward_metadata))

    # ------------------------------------------------------------------ building

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        """The option declarations (dataclass fields, with help, env, flag, secret)."""
        return list(dataclasses.fields(cls))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per option; defaults stay None so the environment can fill them."""
        config_sources.add_arguments(cls, parser)

    @classmethod
    def load(
        cls,
        args: argparse.Namespace | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Flags, then environment, then the config file, then defaults.

        Raises ConfigError naming the option (never echoing a secret's value).
        """
        return config_sources.load(cls, args, environ, overrides)

    def validate(self) -> None:
        """Refuse configurations that cannot work or are unsafe, saying how to fix them:
        ConfigError (bridge/config_checks.py holds every check)."""
        config_checks.validate(self)

    def masked(self) -> dict[str, Any]:
        """The configuration as a dict, secrets replaced, for printing and logs."""
        out: dict[str, Any] = {}
        for f in self.options():
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = "***"
            out[f.name] = value
        return out


def read_config_file(path: str) -> dict[str, Any]:
    """The options of a TOML file, by field name; unknown keys are a ConfigError."""
    return config_sources.read_config_file(Config, path)


def choices_of(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """The values of an option typed as a `Literal`; () for any other option."""
    return config_checks.choices_of(Config, f)


def flag_for(name: str) -> str:
    """The command-line flag of the option named `name` (a Config field name)."""
    return flag_of(Config.__dataclass_fields__[name])
