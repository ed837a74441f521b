"""Where a configuration comes from: command-line flags (argparse), environment variables and
the TOML config file, coerced to each option's type. `Config.add_arguments` and `Config.load`
(bridge/config.py) are these functions with the class filled in; `Config` is seen only as
the class passed in, so bridge/config.py can import this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.config_checks import ConfigError, choices_of, flag_of

if TYPE_CHECKING:
    from bridge.config import Config


def add_arguments(cls: type[Config], parser: argparse.ArgumentParser) -> None:
    """One flag per option; defaults stay None so the environment can fill them."""
    for f in cls.options():
        meta = f.metadata
        env = f" [env {meta['env']}]" if meta["env"] else ""
        default = "unset" if meta["secret"] or f.default in (None, "") else f.default
        text = f"{meta['help']} Default: {default}.{env}"
        text = text.replace("%", "%%")
        if _kind(cls, f) == "bool":
            parser.add_argument(
                flag_of(f),
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=text,
            )
        elif choices_of(cls, f):
            parser.add_argument(
                flag_of(f),
                dest=f.name,
                default=None,
                type=functools.partial(_choice, cls, f),
                choices=choices_of(cls, f),
                help=text,
            )
        else:
            parser.add_argument(flag_of(f), dest=f.name, default=None, help=text, metavar="VALUE")


def load(
    cls: type[Config],
    args: argparse.Namespace | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
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
    from_file = read_config_file(cls, str(path)) if path else {}
    values: dict[str, Any] = {}
    for f in cls.options():
        raw = given(f)
        if raw is None:
            raw = from_file.get(f.name)
        if raw is None:
            continue
        values[f.name] = _coerce(cls, f, raw)
    config = cls(**values)
    config.validate()
    return config


def read_config_file(cls: type[Config], path: str) -> dict[str, Any]:
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
    fields = {f.name: f for f in cls.options()}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        f = fields.get(name)
        if f is None or name in ("config_file", "worker_index"):
            known = ", ".join(n for n in fields if n not in ("config_file", "worker_index"))
            raise ConfigError(f"{path}: unknown option {key!r}; known options: {known}")
        if (
            isinstance(value, list)
            and _kind(cls, f) == "str"
            and all(isinstance(v, str) for v in value)
        ):
            value = ",".join(value)
        out[name] = _typed(cls, f, value, f"{path}: {key}")
    return out


def _typed(owner: type, f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    """A TOML value checked against the option's type (TOML strings are parsed as flags)."""
    kind = _kind(owner, f)
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


def _kind(owner: type, f: dataclasses.Field[Any]) -> str:
    if choices_of(owner, f):
        return "str"
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return kind.replace(" | None", "")


def _choice(owner: type, f: dataclasses.Field[Any], raw: str) -> str:
    """`raw` spelled as the choice it names, ignoring case (`--log-level debug`); a value
    that names none is returned as it is, for argparse or `Config.validate` to refuse."""
    for choice in choices_of(owner, f):
        if raw.strip().lower() == choice.lower():
            return choice
    return raw


def _coerce(owner: type, f: dataclasses.Field[Any], raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if choices_of(owner, f):
        return _choice(owner, f, raw)
    kind = _kind(owner, f)
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
