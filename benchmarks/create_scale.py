"""How ``create_run`` scales with the runs already in a store.

One store grows to each of ``--sizes`` runs (each ``synthetic_counts(2, 64, 10)``: 2 layers x
64 neurons x 10 languages); at each size, ``--repeat`` new runs are created and timed one by
one, each deleted again (untimed) so the store keeps its size, and the median printed: the
whole create, and the create with the consolidated metadata's refresh (``_consolidate``, a
rewrite of the whole store's metadata) replaced by a no-op, which is what the create's own
checks and recovery cost. The last column is the ratio of the largest size to the smallest.

Run it with ``.venv/bin/python benchmarks/create_scale.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from langneurons.store import ActivationStore, create_store  # noqa: E402
from store import synthetic_counts  # noqa: E402


def _timed_create(store: ActivationStore, run: str, *, consolidate: bool) -> float:
    """Seconds one create of ``run`` takes (``consolidate``: with the metadata's refresh)."""
    counts = synthetic_counts(2, 64, 10, seed=1)
    refresh = ActivationStore._consolidate
    if not consolidate:
        ActivationStore._consolidate = lambda self: None  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        store.create_run(run, n_layers=2, n_neurons=64, counts=counts)
        return time.perf_counter() - t0
    finally:
        ActivationStore._consolidate = refresh  # type: ignore[method-assign]
        store.delete_run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 100, 200])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    counts = synthetic_counts(2, 64, 10)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = create_store(Path(tmp) / "s.zarr")
        made = 0
        for size in sorted(args.sizes):
            while made < size:
                store.create_run(f"m/r{made:04d}", n_layers=2, n_neurons=64, counts=counts)
                made += 1
            whole = [_timed_create(store, "new/run", consolidate=True) for _ in range(args.repeat)]
            own = [_timed_create(store, "new/run", consolidate=False) for _ in range(args.repeat)]
            rows.append((size, statistics.median(whole), statistics.median(own)))
    print(f"{'runs':>6} {'create_run (ms)':>16} {'without _consolidate (ms)':>26}")
    for size, whole, own in rows:
        print(f"{size:>6} {whole * 1e3:>16.1f} {own * 1e3:>26.1f}")
    (n0, w0, o0), (n1, w1, o1) = rows[0], rows[-1]
    print(f"{n1} runs / {n0}: create_run {w1 / w0:.1f}x, without _consolidate {o1 / o0:.1f}x")


if __name__ == "__main__":
    main()
