"""The checks of a configuration: what `Config.validate` refuses, and the address helpers.

Every check of an option lives here, behind `Config.validate` (bridge/config.py), and says
which flag to change and how. This module sees `Config` only through its instance (its
fields and their metadata), so bridge/config.py can import it.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from bridge.upstream.headers import unforwardable

if TYPE_CHECKING:
    from bridge.config import Config


class ConfigError(ValueError):
    """A configuration that cannot work; the message says which option and why."""


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of an option (its `flag`, else `--` and its name, dashed)."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _flag_for(config: Config, name: str) -> str:
    return flag_of(type(config).__dataclass_fields__[name])


def choices_of(owner: type, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """The values of an option of the dataclass `owner` typed as a `Literal`; () for any
    other option."""
    hint = _hints(owner).get(f.name)
    return get_args(hint) if get_origin(hint) is Literal else ()


@functools.cache
def _hints(owner: type) -> dict[str, Any]:
    return get_type_hints(owner)


def split_list(value: str) -> list[str]:
    """A comma-separated option as its non-empty, stripped items."""
    return [part.strip() for part in value.split(",") if part.strip()]


def validate(config: Config) -> None:
    """Refuse configurations that cannot work or are unsafe, saying how to fix them."""
    _validate_upstream(config)
    host, _ = split_host_port(config.listen)
    if config.max_attempts < 1:
        raise ConfigError("--max-attempts must be at least 1")
    for f in dataclasses.fields(config):
        choices = choices_of(type(config), f)
        value = getattr(config, f.name)
        if choices and value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{flag_of(f)} must be one of {allowed}, got {value!r}")
    _validate_observability(config)
    if config.workers < 1:
        raise ConfigError("--workers must be at least 1")
    for name in (
        "connect_timeout",
        "upstream_timeout",
        "shutdown_grace",
        "keepalive_time",
        "keepalive_timeout",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{_flag_for(config, name)} must be positive")
    for name in (
        "max_concurrent_streams",
        "min_client_ping_interval",
        "max_connection_age",
        "max_connection_age_grace",
        "initial_backoff",
        "max_backoff",
    ):
        if getattr(config, name) < 0:
            raise ConfigError(f"{_flag_for(config, name)} must not be negative")
    _validate_tls(config)
    if (
        config.credential
        and not config.tls
        and not is_loopback_host(host)
        and not config.allow_plaintext
    ):
        raise ConfigError(
            f"refusing to serve plaintext on {config.listen} (not a loopback address) while "
            f"holding the credential from {config.credential_source}: anyone on the network "
            "could read calls and use the credential. Serve TLS (--tls-cert and "
            "--tls-key), listen on 127.0.0.1, or pass --allow-plaintext (e.g. behind a "
            "TLS-terminating sidecar)"
        )
    for i, digest in enumerate(split_list(config.access_token_sha256 or ""), 1):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ConfigError(
                f"--access-token-sha256: entry {i} is not a SHA-256 hex digest (64 hex "
                "digits); configure digests, never tokens: `python -m bridge hash-token` "
                "prints the digest of a token read from stdin"
            )
    for key in split_list(config.forward_metadata):
        reason = unforwardable(key.lower())
        if reason:
            raise ConfigError(f"--forward-metadata: cannot forward {key!r}: {reason}")


def _validate_upstream(config: Config) -> None:
    """The base URL is a plain http(s) origin and path; every configured header value
    (the credential) is a valid HTTP header value (DESIGN.md "Credentials")."""
    flag = "--upstream / BRIDGE_UPSTREAM_URL"
    try:
        parts = urlsplit(config.upstream_url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{flag} is not a valid URL: {exc}") from None
    # Never print a password: show the URL with its userinfo masked.
    shown = config.upstream_url
    if parts.password is not None:
        shown = shown.replace(f":{parts.password}@", ":***@", 1)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} must be an http(s) URL, got {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{flag} must not carry user:password ({shown!r}): the bridge sends its "
            "credential as 'Authorization: Bearer' (--api-key / AI_GATEWAY_API_KEY)"
        )
    if parts.query or "?" in config.upstream_url:
        raise ConfigError(
            f"{flag} must not have a query string ({shown!r}): request paths are appended "
            "to the base URL, so a query would end up in the middle of the path. Give the "
            "base URL up to its /v1 (an Azure api-version goes through a proxy such as "
            "LiteLLM, or an `extra_fields` entry where the upstream accepts it in the body)"
        )
    if parts.fragment or "#" in config.upstream_url:
        raise ConfigError(f"{flag} must not have a #fragment ({shown!r})")
    for name in ("api_key", "oidc_token"):
        value = getattr(config, name)
        if value is None:
            continue
        bad = [c for c in value if not (c == "\t" or " " <= c <= "~")]
        if bad or value != value.strip():
            what = f"the character U+{ord(bad[0]):04X}" if bad else "outer whitespace"
            raise ConfigError(
                f"{_flag_for(config, name)} contains {what}; the credential must be sent as an "
                "HTTP header value (visible ASCII only). A trailing newline often comes from "
                "`echo` or a secret file: strip it"
            )


def _validate_tls(config: Config) -> None:
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: set both or neither")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError(
            "--tls-client-ca (mutual TLS) needs the server's own --tls-cert and --tls-key"
        )
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(config, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{_flag_for(config, name)}: cannot read {path!r}")


def _validate_observability(config: Config) -> None:
    if config.metrics_listen is not None:
        try:
            split_host_port(config.metrics_listen)
        except ConfigError:
            raise ConfigError(
                f"--metrics-listen must be HOST:PORT, got {config.metrics_listen!r}"
            ) from None
        if config.metrics_listen == config.listen and not config.metrics_listen.endswith(":0"):
            raise ConfigError("--metrics-listen must differ from --listen")


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
