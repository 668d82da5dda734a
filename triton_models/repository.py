"""The serving repository: the committed model folders copied into a build folder.

Why a copy: Triton reads versions from disk, and trained versions (an adapter and a head,
written by `chimera train`) must not land in the checkout. The committed configs, shared
model-level code and version 1 are refreshed on every prepare; generated versions stay.
"""
from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("embedder", "estimator")   # loaded at start; "decomposer" is prepared and loaded on request
ALL = MODELS + ("decomposer",)


def prepare(dest: Path | str, models: tuple[str, ...] = ALL) -> Path:
    """Copy config.pbtxt, model-level *.py and the committed versions of `models` into `dest`."""
    dest = Path(dest)
    for name in models:
        src, out = HERE / name, dest / name
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and (f.suffix == ".py" or f.name == "config.pbtxt") and f.name != "__init__.py":
                shutil.copy2(f, out / f.name)
            elif f.is_dir() and f.name.isdigit():
                (out / f.name).mkdir(exist_ok=True)
                for g in f.iterdir():
                    if g.is_file() and g.suffix == ".py":
                        shutil.copy2(g, out / f.name / g.name)
    return dest


def versions(repository: Path | str, model: str) -> list[int]:
    """The version numbers on disk for `model`, ascending."""
    folder = Path(repository) / model
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.exists() else []
