"""Generate the Python code under generated/ from protos/.

`make generate` runs this module. The test suite calls `generate_into` on a temporary
directory and compares the result with the committed tree, so generated/ can never be
stale or hand-edited unnoticed. The generator versions are pinned in pyproject.toml
(`codegen` extra).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
PACKAGE = "aigateway"
DESCRIPTOR_SET = Path(PACKAGE, "v1", "descriptor_set.binpb")
"""A FileDescriptorSet of protos/ with its imports and comments (source info), package data
that server reflection serves, so that `grpcurl describe` shows the documentation. The
_pb2 modules' own descriptors carry no comments."""

_PACKAGE_INIT = (
    '"""Generated code for the `{name}` proto package. Do not edit; run `make generate`."""\n'
)


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate_into(out: Path) -> None:
    """Run protoc (from the pinned grpcio-tools) with the mypy-protobuf plugins into `out`."""
    well_known = resources.files("grpc_tools") / "_proto"
    bindir = Path(sys.executable).parent
    (out / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *(str(p.relative_to(PROTOS)) for p in proto_files()),
    ]
    subprocess.run(args, check=True, cwd=ROOT)
    for package_dir in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        name = ".".join(package_dir.relative_to(out).parts)
        (package_dir / "__init__.py").write_text(_PACKAGE_INIT.format(name=name))
        (package_dir / "py.typed").write_text("")


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two trees (missing on either side included)."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + n for n in cmp.left_only + cmp.right_only + cmp.funny_files)
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
        found.extend(prefix + n for n in mismatch + errors)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b, ignore=["__pycache__"]), "")
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated/ is stale")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate_into(fresh)
        if opts.check:
            stale = differences(fresh / PACKAGE, GENERATED / PACKAGE)
            if stale:
                print("generated/ is stale; run `make generate`:", *stale, sep="\n  ")
                return 1
            return 0
        shutil.rmtree(GENERATED / PACKAGE, ignore_errors=True)
        shutil.copytree(fresh / PACKAGE, GENERATED / PACKAGE)
    print(f"generated {GENERATED / PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
