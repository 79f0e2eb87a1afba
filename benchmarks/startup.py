"""Start-up of the command line: ``langneurons --help``, ``langneurons info STORE`` and
``import langneurons`` against a bare ``python -c pass``, each the median of several fresh
processes (target, issue 15: ``--help`` and ``info`` under 5x; ``info`` reads a small store's
metadata and two arrays per run, without zarr or xarray; the imports are shown without a target).

``--json OUT`` also writes the headline rows for ``make bench``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bytecode import compile_langneurons  # noqa: E402
from _table import row, write_rows  # noqa: E402

#: Issue 15: ``--help`` and ``info`` start in under 5x a bare ``python -c pass``.
TARGETS = {"langneurons --help": 5.0, "langneurons info STORE": 5.0}


def wall(argv: list[str], repeat: int) -> float:
    """Median wall time of ``repeat`` fresh processes running ``argv``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def small_store(path: Path) -> Path:
    """A store of two runs, ten languages, per-sequence counts and one saved result."""
    import numpy as np

    from langneurons.analysis import identify
    from langneurons.store import Counts, create_store

    rng = np.random.default_rng(0)
    langs = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "sw", "hi"]
    store = create_store(path)
    for run in ("m/base", "m/aligned"):
        tokens = rng.integers(100, 1000, size=(len(langs), 2))
        active = (rng.random((len(langs), 2, 4, 64)) * tokens[:, :, None, None]).astype(np.int64)
        store.create_run(run, n_layers=4, n_neurons=64, counts=Counts(langs, active, tokens))
    store.save_result(
        "m/base", "identification", "ternary", identify(store.open_run("m/base"), lam_widen=10)
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 processes each")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    py = sys.executable
    tmp = tempfile.TemporaryDirectory()
    store = small_store(Path(tmp.name) / "s.zarr")
    compile_langneurons()  # as installed: no module compiled from source in the timed processes
    # alternate so that a busy moment of the machine hits both alike
    bare = wall([py, "-c", "pass"], repeat)
    measures = {
        "langneurons --help": [py, "-m", "langneurons", "--help"],
        "langneurons info STORE": [py, "-m", "langneurons", "info", str(store)],
        "import langneurons": [py, "-c", "import langneurons"],
        "import langneurons.errors": [py, "-c", "import langneurons.errors"],
    }
    results = {name: wall(argv, repeat) for name, argv in measures.items()}
    bare = min(bare, wall([py, "-c", "pass"], repeat))
    print(f"{'command':<30}{'median s':>10}{'x python -c pass':>18}")
    print(f"{'python -c pass':<30}{bare:>10.3f}{1.0:>18.2f}")
    for name, seconds in results.items():
        print(f"{name:<30}{seconds:>10.3f}{seconds / bare:>18.2f}")
    write_rows(
        args.json,
        [
            row(
                "startup",
                f"{name} vs python -c pass",
                seconds,
                unit="s",
                baseline=bare,
                target=TARGETS.get(name),
                note=f"median of {repeat} processes",
            )
            for name, seconds in results.items()
        ],
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
