"""Byte-compile langneurons before timing fresh processes, as an installed package would be.

``pip install`` of the wheel writes every module's bytecode at install time. An editable
checkout only gets it when Python may write ``__pycache__``, and this machine (like many CI
images) sets ``PYTHONDONTWRITEBYTECODE=1``: every process then compiles each langneurons module
it imports from source again (about 0.07 s for ``langneurons identify``), a cost no installed
copy pays and the baselines (torch, numpy, zarr: site-packages, compiled) do not pay either.
Compiling once, untimed, puts the checkout on the same footing. Reading bytecode is allowed
whatever ``PYTHONDONTWRITEBYTECODE`` says.
"""

from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path

PACKAGES = (
    "langneurons",
    "langneurons.store",
    "langneurons.analysis",
    "langneurons.extract",
    "langneurons.reports",
)


def compile_langneurons() -> None:
    """Write the bytecode of every langneurons module (quietly; fails loudly if it cannot)."""
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)  # its folder, without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot find the package {name}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        if not compileall.compile_dir(str(folder), quiet=1):
            raise RuntimeError(f"could not byte-compile {folder}")
