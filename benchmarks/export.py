"""Export benchmark: a full-size run as a Parquet neuron table, streamed, against one DataFrame.

A Mistral-7B-size run (32 layers x 14336 neurons x 10 languages x 2 roles of int64 counts:
9.2 million rows) exported with ``ActivationStore.export_parquet``, which writes a batch of layers
at a time and reads every row group back to compare it with the store. The baseline is what one
would write by hand: ``ds.to_dataframe()`` of the run, ``P`` added, ``df.to_parquet()``. Each
runs in a fresh process, so its peak resident memory (``VmHWM``) is its own.

Prints seconds and peak MiB of both and the ratios (ours / by hand), measured in one run.
``--json OUT`` also writes the headline rows for ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _table import row, write_rows

from langneurons.store import Counts, RunMetadata, create_store

CHILD = r"""
import json, sys, time
from pathlib import Path
store_path, dest, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
from langneurons.store import open_store
store = open_store(store_path)
t0 = time.perf_counter()
if how == "streamed":
    store.export_parquet(dest)
else:
    ds = store.open_run("bench/base")
    df = ds[["n_active", "n_tokens"]].to_dataframe().reset_index()
    df["P"] = df["n_active"] / df["n_tokens"]
    df.insert(0, "run", "bench/base")
    dest.mkdir(parents=True)
    df.to_parquet(dest / "base.parquet")
seconds = time.perf_counter() - t0
peak = 0.0
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak}))
"""


def synthetic_counts(layers: int, neurons: int, languages: int, seed: int = 0) -> Counts:
    """Binomial counts with realistic activation rates and ~10^5 tokens per language and role."""
    rng = np.random.default_rng(seed)
    rate = rng.beta(1.2, 6.0, size=(layers, neurons))
    tokens = rng.integers(80_000, 120_000, size=(languages, 2))
    active = np.empty((languages, 2, layers, neurons), dtype=np.int64)
    for k in range(languages):
        for r in range(2):
            active[k, r] = rng.binomial(tokens[k, r], rate)
    return Counts([f"l{k}" for k in range(languages)], active, tokens)


def _child(store: Path, dest: Path, how: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), str(dest), how],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{how} export failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--neurons", type=int, default=14336)
    parser.add_argument("--languages", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a small run (4 x 1024 x 3)")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.neurons, args.languages = 4, 1024, 3
    work = Path(tempfile.mkdtemp(prefix="langneurons-bench-"))
    try:
        store = work / "store.zarr"
        create_store(store).create_run(
            "bench/base",
            n_layers=args.layers,
            n_neurons=args.neurons,
            metadata=RunMetadata(model="synthetic"),
            counts=synthetic_counts(args.layers, args.neurons, args.languages),
        )
        rows_n = args.languages * 2 * args.layers * args.neurons
        t0 = time.perf_counter()
        ours = _child(store, work / "streamed", "streamed")
        hand = _child(store, work / "by-hand", "dataframe")
        size = sum(p.stat().st_size for p in (work / "streamed").rglob("*.parquet"))
        print(f"{rows_n:,} rows ({args.languages} languages x 2 roles x {args.layers} layers x "
              f"{args.neurons} neurons); Parquet {size / 2**20:.1f} MiB")  # fmt: skip
        print(f"export_parquet (streamed, read back and compared): {ours['seconds']:.1f} s, "
              f"peak {ours['peak_mib']:.0f} MiB")  # fmt: skip
        print(f"to_dataframe + to_parquet (by hand, not checked):   {hand['seconds']:.1f} s, "
              f"peak {hand['peak_mib']:.0f} MiB")  # fmt: skip
        print(f"ratios (ours / by hand): time {ours['seconds'] / hand['seconds']:.2f}x, "
              f"peak memory {ours['peak_mib'] / hand['peak_mib']:.2f}x "
              f"(measured in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        note = f"{rows_n:,} rows"
        write_rows(
            args.json,
            [
                row(
                    "export",
                    "parquet peak memory",
                    ours["peak_mib"],
                    unit="MiB",
                    baseline=hand["peak_mib"],
                    peak_mib=ours["peak_mib"],
                    peak_of="VmHWM",
                    note=f"{note}; baseline to_dataframe",
                ),  # fmt: skip
                row(
                    "export",
                    "parquet time",
                    ours["seconds"],
                    unit="s",
                    baseline=hand["seconds"],
                    note=f"{note}; ours reads back and compares",
                ),  # fmt: skip
            ],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
