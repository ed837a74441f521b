"""The bridge's configuration: one dataclass, built once from flags, environment and a file.

Every option is declared once, as a field of `Config` with its flag, environment variable
and help text; `python -m bridge serve --help`, `python -m bridge config` and the config
file's keys are generated from the same declarations. Nothing else in the package reads
`os.environ`. Precedence: command-line flag, then environment variable, then the config
file (`--config FILE` / `BRIDGE_CONFIG`, TOML, keys = option names), then the default.

To add an option: add a field below with `_opt(...)` (and a check in `validate` when some
values cannot work); the flag, the variable, the help, the file key and masking follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from bridge.upstream.headers import unforwardable
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


class ConfigError(ValueError):
    """A configuration that cannot work; the message says which option and why."""


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
        "Largest gRPC message received or sent, in bytes (embedding batches are large).",
        env="BRIDGE_MAX_MESSAGE_BYTES",
    )
    max_response_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest upstream response body (or single stream event) accepted, in bytes.",
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
        return tuple(bytes.fromhex(d) for d in _split(self.access_token_sha256 or ""))

    @property
    def extra_forwarded_metadata(self) -> frozenset[str]:
        return frozenset(k.lower() for k in _split(self.forward_metadata))

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
            default = "unset" if meta["secret"] or f.default in (None, "") else f.default
            text = f"{meta['help']} Default: {default}.{env}"
            text = text.replace("%", "%%")
            if _kind(f) == "bool":
                parser.add_argument(
                    flag_of(f),
                    dest=f.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=text,
                )
            elif choices_of(f):
                parser.add_argument(
                    flag_of(f),
                    dest=f.name,
                    default=None,
                    type=functools.partial(_choice, f),
                    choices=choices_of(f),
                    help=text,
                )
            else:
                parser.add_argument(
                    flag_of(f), dest=f.name, default=None, help=text, metavar="VALUE"
                )

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
        environ = os.environ if environ is None else environ

        def given(f: dataclasses.Field[Any]) -> Any:
            raw: Any = overrides.get(f.name)
            if raw is None and args is not None:
                raw = getattr(args, f.name, None)
            if raw is None and f.metadata["env"]:
                raw = environ.get(f.metadata["env"]) or None
            return raw

        by_name = {f.name: f for f in cls.options()}
        path = given(by_name["config_file"])
        from_file = read_config_file(str(path)) if path else {}
        values: dict[str, Any] = {}
        for f in cls.options():
            raw = given(f)
            if raw is None:
                raw = from_file.get(f.name)
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse configurations that cannot work or are unsafe, saying how to fix them."""
        self._validate_upstream()
        host, _ = split_host_port(self.listen)
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        for f in self.options():
            choices = choices_of(f)
            value = getattr(self, f.name)
            if choices and value not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{flag_of(f)} must be one of {allowed}, got {value!r}")
        self._validate_observability()
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        for name in (
            "connect_timeout",
            "upstream_timeout",
            "shutdown_grace",
            "keepalive_time",
            "keepalive_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag_for(name)} must be positive")
        for name in (
            "max_concurrent_streams",
            "min_client_ping_interval",
            "max_connection_age",
            "max_connection_age_grace",
            "initial_backoff",
            "max_backoff",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag_for(name)} must not be negative")
        self._validate_tls()
        if (
            self.credential
            and not self.tls
            and not is_loopback_host(host)
            and not self.allow_plaintext
        ):
            raise ConfigError(
                f"refusing to serve plaintext on {self.listen} (not a loopback address) while "
                f"holding the credential from {self.credential_source}: anyone on the network "
                "could read calls and use the credential. Serve TLS (--tls-cert and "
                "--tls-key), listen on 127.0.0.1, or pass --allow-plaintext (e.g. behind a "
                "TLS-terminating sidecar)"
            )
        for i, digest in enumerate(_split(self.access_token_sha256 or ""), 1):
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ConfigError(
                    f"--access-token-sha256: entry {i} is not a SHA-256 hex digest (64 hex "
                    "digits); configure digests, never tokens: `python -m bridge hash-token` "
                    "prints the digest of a token read from stdin"
                )
        for key in _split(self.forward_metadata):
            reason = unforwardable(key.lower())
            if reason:
                raise ConfigError(f"--forward-metadata: cannot forward {key!r}: {reason}")

    def _validate_upstream(self) -> None:
        """The base URL is a plain http(s) origin and path; every configured header value
        (the credential) is a valid HTTP header value (DESIGN.md "Credentials")."""
        flag = "--upstream / BRIDGE_UPSTREAM_URL"
        try:
            parts = urlsplit(self.upstream_url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"{flag} is not a valid URL: {exc}") from None
        # Never print a password: show the URL with its userinfo masked.
        shown = self.upstream_url
        if parts.password is not None:
            shown = shown.replace(f":{parts.password}@", ":***@", 1)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{flag} must be an http(s) URL, got {shown!r}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"{flag} must not carry user:password ({shown!r}): the bridge sends its "
                "credential as 'Authorization: Bearer' (--api-key / AI_GATEWAY_API_KEY)"
            )
        if parts.query or "?" in self.upstream_url:
            raise ConfigError(
                f"{flag} must not have a query string ({shown!r}): request paths are appended "
                "to the base URL, so a query would end up in the middle of the path. Give the "
                "base URL up to its /v1 (an Azure api-version goes through a proxy such as "
                "LiteLLM, or an `extra_fields` entry where the upstream accepts it in the body)"
            )
        if parts.fragment or "#" in self.upstream_url:
            raise ConfigError(f"{flag} must not have a #fragment ({shown!r})")
        for name in ("api_key", "oidc_token"):
            value = getattr(self, name)
            if value is None:
                continue
            bad = [c for c in value if not (c == "\t" or " " <= c <= "~")]
            if bad or value != value.strip():
                what = f"the character U+{ord(bad[0]):04X}" if bad else "outer whitespace"
                raise ConfigError(
                    f"{flag_for(name)} contains {what}; the credential must be sent as an HTTP "
                    "header value (visible ASCII only). A trailing newline often comes from "
                    "`echo` or a secret file: strip it"
                )

    def _validate_tls(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together: set both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError(
                "--tls-client-ca (mutual TLS) needs the server's own --tls-cert and --tls-key"
            )
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"{flag_for(name)}: cannot read {path!r}")

    def _validate_observability(self) -> None:
        if self.metrics_listen is not None:
            try:
                split_host_port(self.metrics_listen)
            except ConfigError:
                raise ConfigError(
                    f"--metrics-listen must be HOST:PORT, got {self.metrics_listen!r}"
                ) from None
            if self.metrics_listen == self.listen and not self.metrics_listen.endswith(":0"):
                raise ConfigError("--metrics-listen must differ from --listen")

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
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(
            f"--config / BRIDGE_CONFIG: cannot read {path!r}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config / BRIDGE_CONFIG: {path} is not valid TOML: {exc}") from None
    fields = {f.name: f for f in Config.options()}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        f = fields.get(name)
        if f is None or name in ("config_file", "worker_index"):
            known = ", ".join(n for n in fields if n not in ("config_file", "worker_index"))
            raise ConfigError(f"{path}: unknown option {key!r}; known options: {known}")
        if isinstance(value, list) and _kind(f) == "str" and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        out[name] = _typed(f, value, f"{path}: {key}")
    return out


def _typed(f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    """A TOML value checked against the option's type (TOML strings are parsed as flags)."""
    kind = _kind(f)
    if isinstance(value, str):
        return value
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, False)
    if not ok:
        raise ConfigError(f"{where}: expected {kind}, got {type(value).__name__}")
    return float(value) if kind == "float" else value


def _kind(f: dataclasses.Field[Any]) -> str:
    if choices_of(f):
        return "str"
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return kind.replace(" | None", "")


def choices_of(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """The values of an option typed as a `Literal`; () for any other option."""
    hint = _HINTS.get(f.name)
    return get_args(hint) if get_origin(hint) is Literal else ()


def _choice(f: dataclasses.Field[Any], raw: str) -> str:
    """`raw` spelled as the choice it names, ignoring case (`--log-level debug`); a value
    that names none is returned as it is, for argparse or `Config.validate` to refuse."""
    for choice in choices_of(f):
        if raw.strip().lower() == choice.lower():
            return choice
    return raw


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def flag_for(name: str) -> str:
    """The command-line flag of the option named `name` (a Config field name)."""
    return flag_of(Config.__dataclass_fields__[name])


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if choices_of(f):
        return _choice(f, raw)
    kind = _kind(f)
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
        shown = "the value given" if f.metadata["secret"] else repr(raw)
        raise ConfigError(f"{flag_of(f)}: {shown} is not a valid {kind}") from None
    return raw


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') into its parts; ConfigError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


_HINTS: dict[str, Any] = get_type_hints(Config)
