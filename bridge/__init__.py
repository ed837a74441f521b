"""A gRPC bridge for OpenAI-compatible AI APIs (`python -m bridge serve`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Written once, in pyproject.toml; installed metadata is where it is read from.
    __version__ = version("aigateway-bridge")
except PackageNotFoundError:  # a checkout on sys.path without `pip install -e .`
    __version__ = "0+unknown"
