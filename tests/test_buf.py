"""The protos as a published API: buf lint, format and breaking checks, and the descriptor set.

Both run through their Makefile targets (`make proto-check`, `make descriptor`), so CI checks
exactly what a developer runs. buf itself is pinned in the `dev` extra (`buf-bin`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = sorted(
    str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto")
)
SERVICES = {"ChatService", "EmbeddingsService", "ModelsService", "ResponsesService"}


def make(target: str) -> None:
    result = subprocess.run(
        ["make", "-s", target], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout}\n{result.stderr}"


def load_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString(path.read_bytes())
    return descriptors


def test_buf_lint_format_and_breaking_pass() -> None:
    """STANDARD + COMMENTS lint, `buf format`, and no breaking change since the baseline."""
    make("proto-check")


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    make("descriptor")
    return load_set(ROOT / "build" / "aigateway.binpb")


def test_descriptor_set_is_self_contained(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    """grpcurl, Postman and Envoy's transcoder need every import inside the set."""
    names = [f.name for f in descriptor_set.file]
    assert set(PROTO_FILES) <= set(names)
    assert "google/protobuf/struct.proto" in names
    for file in descriptor_set.file:
        assert set(file.dependency) <= set(names[: names.index(file.name)]), file.name
    services = {s.name for f in descriptor_set.file for s in f.service}
    assert services == SERVICES


def test_descriptor_set_keeps_comments(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    """Source info is kept, so tools can show each field's documentation."""
    chat = next(f for f in descriptor_set.file if f.name == "aigateway/v1/chat.proto")
    comments = [loc.leading_comments for loc in chat.source_code_info.location]
    assert any("Sampling temperature" in c for c in comments)


def test_language_options_are_the_same_in_every_file(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    """Every language generates from every file without flags, into one package."""
    ours = [f for f in descriptor_set.file if f.name in PROTO_FILES]
    options = [
        {o.name: v for o, v in f.options.ListFields() if o.name != "java_outer_classname"}
        for f in ours
    ]
    assert all(o == options[0] for o in options), options
    assert set(options[0]) >= {"go_package", "java_package", "java_multiple_files",
                               "csharp_namespace", "php_namespace", "ruby_package",
                               "objc_class_prefix"}  # fmt: skip
    for file in ours:
        stem = Path(file.name).stem
        assert file.options.java_outer_classname == stem.capitalize() + "Proto", file.name


def test_breaking_baseline_is_an_image_of_this_package() -> None:
    """protos/baseline.binpb anchors `buf breaking` (`make proto-baseline` replaces it). It has
    no source info, so comment edits never touch it."""
    baseline = load_set(ROOT / "protos" / "baseline.binpb")
    ours = [f for f in baseline.file if f.package == "aigateway.v1"]
    assert ours
    assert not any(f.HasField("source_code_info") for f in baseline.file)
