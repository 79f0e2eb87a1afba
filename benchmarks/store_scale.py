"""Store benchmark: what one write or read costs in a store of many runs against a store of one.

A writer or reader works on one run, so its cost should not grow with the other runs in the
store. Two stores are built, one run and ``--runs`` runs (small runs: 2 layers x 64 neurons x 10
languages, so that the store's size, not the data, is measured), and in each, alternately and
``--repeat`` times, the store's common calls are timed: ``create_run`` of a new run (with its
counts), ``merge_counts`` into a run, ``save_result`` of an identification result,
``repair(run)`` (what ``langneurons extract`` runs at its start), and the reads ``open_run`` and
``read_run`` of a run (opened afresh). Prints the medians in
milliseconds and the ratio (many runs / one run) measured in the same run of this script;
``--json OUT`` writes the rows for ``make bench`` (reported rows: no target).

    python benchmarks/store_scale.py            # 1 run vs 200 runs
    python benchmarks/store_scale.py --quick    # 1 run vs 20 runs
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _table import row, write_rows

from langneurons.analysis import identify
from langneurons.store import Counts, RunMetadata, create_store, open_store

LAYERS, NEURONS, LANGUAGES = 2, 64, 10


def _counts(seed: int) -> Counts:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(800, 1200, size=(LANGUAGES, 2))
    active = rng.binomial(tokens[:, :, None, None], 0.2, size=(LANGUAGES, 2, LAYERS, NEURONS))
    return Counts([f"l{k}" for k in range(LANGUAGES)], active.astype(np.int64), tokens)


def build(path: Path, runs: int) -> None:
    """A store of ``runs`` runs ``m/r0`` ... (each with one saved result, as analysed runs have)."""
    store = create_store(path)
    result = None
    for i in range(runs):
        store.create_run(
            f"m/r{i}",
            n_layers=LAYERS,
            n_neurons=NEURONS,
            metadata=RunMetadata(model="synthetic"),
            counts=_counts(i),
        )
        if result is None:
            result = identify(store.open_run(f"m/r{i}"), "lape", top_rate=0.05)
        store.save_result(f"m/r{i}", "identification", "lape", result)


def calls(path: Path) -> dict[str, Callable[[int], object]]:
    """The timed calls on the store at ``path`` (each gets the repeat's number)."""
    result = identify(open_store(path).open_run("m/r0"), "lape", top_rate=0.05)
    extra = _counts(99)

    def create(i: int) -> object:
        return open_store(path, mode="r+").create_run(
            f"new/r{i}", n_layers=LAYERS, n_neurons=NEURONS, counts=extra
        )

    return {
        "create_run": create,
        "merge_counts": lambda i: open_store(path, mode="r+").merge_counts("m/r0", extra),
        "save_result": lambda i: open_store(path, mode="r+").save_result(
            "m/r0", "identification", "again", result
        ),
        "repair(run)": lambda i: open_store(path, mode="r+").repair("m/r0"),
        "open_run": lambda i: open_store(path).open_run("m/r0"),
        "read_run": lambda i: open_store(path).read_run("m/r0"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs in the big store")
    parser.add_argument("--repeat", type=int, default=7, help="alternating repeats (medians)")
    parser.add_argument("--quick", action="store_true", help="20 runs, 3 repeats")
    parser.add_argument("--json", type=Path, help="write the rows here (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.repeat = min(args.runs, 20), min(args.repeat, 3)

    work = Path(tempfile.mkdtemp(prefix="langneurons-scale-"))
    try:
        sizes = {1: work / "one.zarr", args.runs: work / "many.zarr"}
        for n, path in sizes.items():
            t0 = time.perf_counter()
            build(path, n)
            print(f"built a store of {n} run(s) in {time.perf_counter() - t0:.1f} s", flush=True)
        timed = {n: calls(path) for n, path in sizes.items()}
        times: dict[tuple[str, int], list[float]] = {}
        for i in range(-1, args.repeat):  # -1: untimed, imports and first opens
            for name in timed[1]:
                for n in sizes:
                    t0 = time.perf_counter()
                    timed[n][name](i)
                    if i >= 0:
                        times.setdefault((name, n), []).append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    many = args.runs
    print(f"\none call in a store of 1 run vs {many} runs (medians of {args.repeat}, ms)")
    print(f"{'call':14s}{'1 run':>10s}{f'{many} runs':>12s}{'ratio':>9s}")
    rows = []
    for name in timed[1]:
        one, big = (statistics.median(times[(name, n)]) for n in (1, many))
        print(f"{name:14s}{one * 1e3:10.1f}{big * 1e3:12.1f}{big / one:8.2f}x")
        rows.append(
            row(
                "store_scale",
                f"{name} in a store of {many} runs vs 1 run",
                big,
                unit="s",
                baseline=one,
                note=f"medians of {args.repeat}, alternating; runs of {LAYERS} x {NEURONS} x "
                f"{LANGUAGES} languages, each with a saved result",
            )
        )
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
