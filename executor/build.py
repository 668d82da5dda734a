"""Task modules are built from source, never checked in as binaries.

C goes to WASI with Debian's clang, lld and wasi-libc (`make modules` installs them: apt
packages clang lld wasi-libc libclang-rt-14-dev-wasm32); WAT is assembled by wasmtime itself.
A built module lands in `.cache/wasm/<name>-<hash>.wasm`, the hash over the source, the
headers beside it and the flags, so a changed source is rebuilt and an unchanged one is not.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).resolve().parent / "modules"
OUT = Path(os.environ.get("CHIMERA_WASM_CACHE", REPO / ".cache" / "wasm"))
CLANG = os.environ.get("WASI_CC", "clang")
# --stack-first: a shadow-stack overflow runs below address 0 and traps instead of silently
# overwriting static data; 1 MiB of stack; symbols stripped (smaller modules, faster loads).
CFLAGS = ["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-Wall", "-Wl,--stack-first",
          "-Wl,-z,stack-size=1048576", "-Wl,--strip-all"]
APT_PACKAGES = ("clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32")


class BuildError(RuntimeError):
    pass


def _digest(src: Path) -> str:
    h = hashlib.sha256()
    h.update(" ".join(CFLAGS).encode())
    h.update(src.read_bytes())
    if src.suffix == ".c":
        for header in sorted(src.parent.glob("*.h")) + sorted(MODULES.glob("*.h")):
            h.update(header.read_bytes())
    return h.hexdigest()[:16]


def toolchain_missing() -> str | None:
    """Why C modules cannot be built here, or None."""
    if shutil.which(CLANG) is None:
        return f"{CLANG} not found (make modules installs {' '.join(APT_PACKAGES)})"
    if not Path("/usr/lib/wasm32-wasi/libc.a").exists():
        return "wasi-libc not installed (/usr/lib/wasm32-wasi/libc.a)"
    return None


def build(src: Path | str, out_dir: Path | None = None) -> Path:
    """The .wasm built from `src` (a .c or .wat file); built only when missing."""
    src = Path(src)
    if not src.is_absolute() and not src.exists():
        src = MODULES / src
    if not src.exists():
        raise BuildError(f"no module source {src}")
    out_dir = out_dir or OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{src.stem}-{_digest(src)}.wasm"
    if target.exists():
        return target
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    if src.suffix == ".wat":
        import wasmtime
        tmp.write_bytes(wasmtime.wat2wasm(src.read_text()))
    elif src.suffix == ".c":
        why = toolchain_missing()
        if why:
            raise BuildError(why)
        proc = subprocess.run([CLANG, *CFLAGS, f"-I{MODULES}", "-o", str(tmp), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise BuildError(f"clang failed on {src.name}:\n{proc.stderr}")
    else:
        raise BuildError(f"unknown module source kind {src.suffix!r} (want .c or .wat)")
    os.replace(tmp, target)
    return target


def build_all(out_dir: Path | None = None) -> dict[str, Path]:
    """Every module source under executor/modules/: stem -> built .wasm."""
    return {p.stem: build(p, out_dir) for p in sorted(MODULES.glob("*.c")) + sorted(MODULES.glob("*.wat"))}


if __name__ == "__main__":
    for name, path in build_all().items():
        print(f"{name:12s} {path} ({path.stat().st_size} bytes)")
