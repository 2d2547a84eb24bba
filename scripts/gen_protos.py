"""Regenerate tessera_api/ from protos/ (run it as `make protos`).

protoc is given every ``protos/**/*.proto`` with ``-I protos`` and writes, per file:

* ``X_pb2.py``        (``--python_out``)      the messages
* ``X_pb2.pyi``       (``--pyi_out``)         their type stubs
* ``X_pb2_grpc.py``   (``--grpc_python_out``) stubs, servicers, ``add_*_to_server``
* ``X_pb2_grpc.pyi``  (``--mypy_grpc_out``, mypy-protobuf) types for the above, sync and aio

into a temporary directory. The package ``tessera.v1`` would then import as ``tessera.v1``,
which is not a package we ship, so the imports between generated modules are rewritten to
``tessera_api.tessera.v1`` (and so is the module name the messages are registered under,
so ``__module__`` and pickling point at the real module). Nothing else in the files is touched.
Each output directory then replaces the generated files of the matching directory under
tessera_api/ wholesale; ``__init__.py`` files there are kept (and created empty if missing).

The output depends only on the .proto files and the pinned grpcio-tools / mypy-protobuf
versions, so `make lint` can regenerate and fail on any difference from what is committed.
"""

from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "tessera_api"
PY_PREFIX = "tessera_api"
DESCRIPTOR_SET = OUT_ROOT / "descriptors.binpb"
# Top-level proto packages we own; their imports get the PY_PREFIX.
OWN_PACKAGES = ("tessera",)

_OWN = "|".join(re.escape(p) for p in OWN_PACKAGES)
_REWRITES: list[tuple[re.Pattern[str], str]] = [
    # from tessera.v1 import common_pb2 as ...   /   from tessera.v1.common_pb2 import X
    (
        re.compile(rf"^(\s*)from ((?:{_OWN})(?:\.\w+)*) import ", re.M),
        rf"\1from {PY_PREFIX}.\2 import ",
    ),
    # import tessera.v1.common_pb2 as ...
    (re.compile(rf"^(\s*)import ((?:{_OWN})\.[\w.]+ as \w+)$", re.M), rf"\1import {PY_PREFIX}.\2"),
    # _builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'tessera.v1.common_pb2', _globals)
    (
        re.compile(rf"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')((?:{_OWN})\.[\w.]+_pb2')"),
        rf"\1{PY_PREFIX}.\2",
    ),
]
# Any import of our packages left unprefixed after the rewrite is a bug in this script.
_LEFTOVER = re.compile(rf"^\s*(?:from|import)\s+(?:{_OWN})\b", re.M)

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> Path:
    """A protoc plugin installed next to this interpreter (the venv's bin/)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            sys.exit(
                f"gen_protos: {name} not found; install the dev extras: pip install -e '.[dev]'"
            )
        path = Path(found)
    return path


def run_protoc(out_dir: Path, descriptor_set: Path) -> None:
    protos = sorted(p.relative_to(ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit(f"gen_protos: no .proto files under {PROTO_ROOT}")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    out = str(out_dir)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT.relative_to(ROOT)}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={descriptor_set}",
        "--include_source_info",
        "--include_imports",
        *protos,
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv, no shell
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"gen_protos: protoc failed (exit {result.returncode})")


def rewrite_imports(text: str, name: str) -> str:
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    leftover = _LEFTOVER.search(text)
    if leftover:
        sys.exit(f"gen_protos: unrewritten import in {name}: {leftover.group(0).strip()!r}")
    return text


def install(gen_dir: Path) -> list[Path]:
    """Replace each generated directory under OUT_ROOT with the fresh output."""
    written: list[Path] = []
    src_dirs = sorted({p.parent for p in gen_dir.rglob("*") if p.is_file()})
    keep = {OUT_ROOT / d.relative_to(gen_dir) for d in src_dirs}
    # Output of a .proto package that no longer exists.
    for stale in sorted(OUT_ROOT.rglob("*")):
        if stale.parent not in keep and stale.name.endswith(GENERATED_SUFFIXES):
            stale.unlink()
    for src_dir in src_dirs:
        rel = src_dir.relative_to(gen_dir)
        dst_dir = OUT_ROOT / rel
        dst_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(dst_dir.iterdir()):
            if old.name == "__init__.py":
                continue
            if old.is_dir():
                if old.name == "__pycache__":
                    shutil.rmtree(old)
                continue  # a sub-package: it is handled (or left alone) on its own
            old.unlink()
        for src in sorted(src_dir.iterdir()):
            if not src.is_file() or not src.name.endswith(GENERATED_SUFFIXES):
                continue
            text = src.read_text(encoding="utf-8")
            dst = dst_dir / src.name
            with dst.open("w", encoding="utf-8", newline="\n") as f:
                f.write(rewrite_imports(text, f"{rel.as_posix()}/{src.name}"))
            written.append(dst)
        # Every directory from OUT_ROOT down to the generated one is a regular package.
        for pkg in (dst_dir, *dst_dir.parents):
            if pkg == OUT_ROOT.parent:
                break
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_bytes(b"")
    return written


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tessera-protos-") as tmp:
        gen_dir = Path(tmp) / "out"
        gen_dir.mkdir()
        descriptor_set = Path(tmp) / DESCRIPTOR_SET.name
        run_protoc(gen_dir, descriptor_set)
        written = install(gen_dir)
        shutil.copyfile(descriptor_set, DESCRIPTOR_SET)
        written.append(DESCRIPTOR_SET)
    print(f"gen_protos: wrote {len(written)} files under {OUT_ROOT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
