"""Configuration: one declaration per option, flag > environment > config file > default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.__main__ import _parser
from bridge.config import Config, ConfigError, flag_of

ROOT = Path(__file__).resolve().parent.parent


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return str(path)


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    path = _file(
        tmp_path, 'max_attempts = 5\nmax_backoff = 3\nlog_level = "DEBUG"\nupstream_timeout = 30\n'
    )
    args = _parser().parse_args(["serve", "--config", path, "--max-attempts", "7"])
    config = Config.load(args, {"BRIDGE_MAX_BACKOFF": "2.5", "BRIDGE_LOG_LEVEL": "WARNING"})
    assert config.max_attempts == 7  # flag over file
    assert config.max_backoff == 2.5  # env over file
    assert config.log_level == "WARNING"
    assert config.upstream_timeout == 30.0  # file over default
    assert config.initial_backoff == Config().initial_backoff  # default
    # The file can come from the environment too.
    assert Config.load(environ={"BRIDGE_CONFIG": path}).max_attempts == 5


def test_config_file_accepts_dashes_lists_and_typed_values(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'forward-metadata = ["x-tenant", "x-env"]\nreflection = false\nkeepalive_time = 45\n',
    )
    config = Config.load(environ={"BRIDGE_CONFIG": path})
    assert config.extra_forwarded_metadata == {"x-tenant", "x-env"}
    assert config.reflection is False
    assert config.keepalive_time == 45.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_atempts = 3\n", r"unknown option 'max_atempts'; known options: .*max_attempts"),
        ('config_file = "other.toml"\n', "unknown option 'config_file'"),
        ('max_attempts = "three"\n', r"--max-attempts: 'three' is not a valid int"),
        ("max_attempts = 2.5\n", "max_attempts: expected int, got float"),
        ("reflection = 1\n", "reflection: expected bool, got int"),
        ("max_attempts = \n", "is not valid TOML"),
    ],
)
def test_config_file_mistakes_are_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        Config.load(environ={"BRIDGE_CONFIG": _file(tmp_path, text)})


def test_missing_config_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot read '/nonexistent/bridge\.toml'"):
        Config.load(environ={"BRIDGE_CONFIG": "/nonexistent/bridge.toml"})


def test_secret_values_are_not_echoed_by_type_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(environ={"BRIDGE_CONFIG": _file(tmp_path, "api_key = 12345\n")})
    assert "12345" not in str(caught.value)


def test_serve_help_documents_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    flattened = " ".join(result.stdout.split())
    for option in Config.options():
        assert flag_of(option) in result.stdout, option.name
        if option.metadata["env"]:
            assert option.metadata["env"] in flattened, option.name
        first_words = " ".join(option.metadata["help"].split()[:4])
        assert first_words in flattened, option.name


def test_config_command_validates_a_file(tmp_path: Path) -> None:
    good = _file(tmp_path, 'listen = "127.0.0.1:6000"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "config", "--config", good],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and '"listen": "127.0.0.1:6000"' in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "config", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "unknown option 'colour'" in result.stderr
