"""Store benchmark: write and read a full-size run, against raw numpy and against torch.save.

A Mistral-7B-size run: 32 layers x 14336 neurons x 10 languages x 2 roles of int64 counts (binomial
draws with realistic activation rates and ~10^5 tokens per language and role). The baseline is the
format users have today: one ``torch.save`` file per language and role,
``{"total_tokens": int, "over_zero": int64[layers, neurons]}``.

The floor (issue 15's target: the store within 2x of it for writing and reading a run's counts)
is ``np.save`` / ``np.load`` of the same ``n_active`` array, one uncompressed file. Writes and reads
of both are timed alternately, ``--repeat`` times, and the medians compared; the compression
ratio (raw bytes / bytes on disk) is printed beside the speed, and the checksum's own cost is
measured as crc32c over the raw counts (an upper bound of what the ``crc32c`` codec adds per
write and per read: it checksums the compressed chunks, ~4x fewer bytes). Each repeat writes a
new store and a new ``.npy`` file; removing the ones from earlier repeats is not timed, and
``os.sync()`` (untimed) before each write and after the last, so that writeback of one arm's
files does not land in another arm's timing. The read target is numpy to numpy:
``read_run(run, variables=["n_active"])`` against ``np.load``; ``open_run(run).n_active.values``,
which also builds an xarray Dataset, is reported beside it.

Prints seconds and bytes on disk, and the ratios measured in one run (reads copy the data into
memory, since torch.load may map files lazily). ``--json OUT`` also writes the headline rows for
``make bench``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _table import peak_rss_mib, row, write_rows

from langneurons.store import Counts, RunMetadata, create_store, open_store


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of ``repeat`` timed calls (the first also warms up imports and caches)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic_counts(layers: int, neurons: int, languages: int, seed: int = 0) -> Counts:
    rng = np.random.default_rng(seed)
    rate = rng.beta(1.2, 6.0, size=(layers, neurons))
    tokens = rng.integers(80_000, 120_000, size=(languages, 2))
    active = np.empty((languages, 2, layers, neurons), dtype=np.int64)
    for k in range(languages):
        shifted = np.clip(rate * rng.uniform(0.8, 1.2, size=rate.shape), 0, 1)
        for r in range(2):
            active[k, r] = rng.binomial(tokens[k, r], shifted)
    return Counts([f"l{k}" for k in range(languages)], active, tokens)


STORE_TARGET = 2.0  # issue 15: write and read within 2x of np.save / np.load


def _write_store(path: Path, counts: Counts, layers: int, neurons: int) -> None:
    """A new store at ``path`` (which must not exist) holding ``counts`` as one run."""
    store = create_store(path)
    store.create_run(
        "bench/base",
        n_layers=layers,
        n_neurons=neurons,
        metadata=RunMetadata(model="synthetic"),
        counts=counts,
    )


def against_numpy(
    work: Path, counts: Counts, layers: int, neurons: int, repeat: int
) -> dict[str, float]:
    """Median write and read seconds of the store and of np.save / np.load, alternately.

    A first round of every arm is not timed: the first ``open_run`` of a process imports
    xarray, the first write creates zarr's event loop and thread pool.
    """
    times: dict[str, list[float]] = {k: [] for k in ("ours_w", "ours_r", "np_w", "np_r", "plain_r")}
    for i in range(-1, repeat):  # -1: the untimed warm-up round
        # both write a new file / store; removing the one from two repeats ago is not timed
        npy, zstore = work / f"n{i % 2}.npy", work / f"s{i % 2}.zarr"
        npy.unlink(missing_ok=True)
        shutil.rmtree(zstore, ignore_errors=True)
        os.sync()  # untimed: no writeback of earlier files running under the timed calls
        t0 = time.perf_counter()
        np.save(npy, counts.n_active)
        times["np_w"].append(time.perf_counter() - t0)
        os.sync()
        t0 = time.perf_counter()
        _write_store(zstore, counts, layers, neurons)
        times["ours_w"].append(time.perf_counter() - t0)
        os.sync()
        t0 = time.perf_counter()
        np.load(npy)
        times["np_r"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _ = open_store(zstore).open_run("bench/base").n_active.values
        times["ours_r"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # as numpy, without xarray (the command line's identify)
        _ = open_store(zstore).read_run("bench/base", variables=["n_active"])["n_active"].data
        times["plain_r"].append(time.perf_counter() - t0)
    out = {k: statistics.median(v[1:]) for k, v in times.items()}  # [0]: the warm-up round
    out["ours_size"] = _du(work / "s0.zarr")
    out["np_size"] = _du(work / "n0.npy")
    from google_crc32c import value as crc32c  # what zarr's crc32c codec calls

    raw = np.ascontiguousarray(counts.n_active).reshape(-1).view(np.uint8)  # no copy timed
    t0 = time.perf_counter()
    crc32c(raw)
    out["crc"] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--neurons", type=int, default=14336)
    parser.add_argument("--languages", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a small run (4 x 1024 x 3)")
    parser.add_argument("--repeat", type=int, default=9, help="alternating timed repeats (medians)")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.neurons, args.languages = 4, 1024, 3
        args.repeat = min(args.repeat, 3)

    counts = synthetic_counts(args.layers, args.neurons, args.languages)
    raw = counts.n_active.nbytes
    work = Path(tempfile.mkdtemp(prefix="langneurons-bench-"))
    try:
        t0 = time.perf_counter()
        store = create_store(work / "store.zarr")
        store.create_run(
            "bench/base",
            n_layers=args.layers,
            n_neurons=args.neurons,
            metadata=RunMetadata(model="synthetic"),
            counts=counts,
        )
        ours_write = time.perf_counter() - t0
        ours_size = _du(work / "store.zarr")
        ours_read = _best(
            lambda: open_store(work / "store.zarr").open_run("bench/base").n_active.values
        )
        loaded = open_store(work / "store.zarr").open_run("bench/base").n_active.values
        assert np.array_equal(loaded, counts.n_active)
        vs_np = against_numpy(work, counts, args.layers, args.neurons, args.repeat)

        rows = [
            ("raw int64 n_active", raw, None, None),
            ("langneurons zarr store", ours_size, ours_write, ours_read),
        ]
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            pt_dir = work / "pt"
            pt_dir.mkdir()
            t0 = time.perf_counter()
            for k, lang in enumerate(counts.languages):
                for r, role in enumerate(("prefix", "full")):
                    torch.save(
                        {
                            "total_tokens": int(counts.n_tokens[k, r]),
                            "over_zero": torch.from_numpy(counts.n_active[k, r]),
                        },
                        pt_dir / f"{role}.activation.{lang}.bench.pt",
                    )
            pt_write = time.perf_counter() - t0
            pt_size = _du(pt_dir)
            files = sorted(pt_dir.glob("*.pt"))
            pt_read = _best(
                lambda: [
                    torch.load(p, weights_only=True)["over_zero"].numpy().copy() for p in files
                ]
            )
            back = [torch.load(p, weights_only=True)["over_zero"].numpy().copy() for p in files]
            assert sum(int(b.sum()) for b in back) == int(counts.n_active.sum())
            rows.append(("torch.save files (baseline)", pt_size, pt_write, pt_read))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    shape = f"{args.layers} x {args.neurons} x {args.languages} languages x 2 roles"
    print(f"store benchmark: {shape}")
    print(f"{'format':<30}{'MiB on disk':>12}{'write s':>10}{'read s':>10}")
    for name, size, write, read in rows:
        w = f"{write:10.2f}" if write is not None else f"{'':>10}"
        r = f"{read:10.2f}" if read is not None else f"{'':>10}"
        print(f"{name:<30}{size / 2**20:12.1f}{w}{r}")
    if torch is not None:
        print(
            f"ratio ours/torch.save: size {ours_size / pt_size:.2f}, "
            f"write {ours_write / pt_write:.2f}, read {ours_read / pt_read:.2f}"
        )
    else:
        print("torch not installed: baseline skipped (pip install 'langneurons[extract]')")
    print(
        f"against numpy (medians of {args.repeat}, alternating): write "
        f"{vs_np['ours_w']:.3f} s vs np.save {vs_np['np_w']:.3f} s "
        f"({vs_np['ours_w'] / vs_np['np_w']:.2f}x), read {vs_np['ours_r']:.3f} s vs np.load "
        f"{vs_np['np_r']:.3f} s ({vs_np['ours_r'] / vs_np['np_r']:.2f}x), read_run (numpy) "
        f"{vs_np['plain_r']:.3f} s ({vs_np['plain_r'] / vs_np['np_r']:.2f}x); compression "
        f"{raw / vs_np['ours_size']:.2f}x (raw {raw / 2**20:.1f} MiB, store "
        f"{vs_np['ours_size'] / 2**20:.1f} MiB); crc32c over the raw counts "
        f"{vs_np['crc']:.3f} s per pass (target <= {STORE_TARGET:g}x)"
    )
    tag = "7B" if (args.layers, args.neurons) == (32, 14336) else f"{args.layers}x{args.neurons}"
    peak = peak_rss_mib()
    full = tag == "7B"
    ratio_note = (
        f"compression {raw / vs_np['ours_size']:.2f}x; crc32c {vs_np['crc']:.3f} s/pass; "
        f"medians of {args.repeat}"
    )
    numpy_rows = [
        row(
            "store",
            f"{tag} {what}: zarr vs {base_name}",
            vs_np[f"ours_{key}"],
            unit="s",
            baseline=vs_np[f"np_{key}"],
            # the read target is numpy to numpy (read_run, below); this read builds an xarray
            # Dataset as well, which np.load does not: reported
            target=STORE_TARGET if full and key == "w" else None,
            note=ratio_note if key == "w" else f"open_run(...).n_active.values; {ratio_note}",
        )
        for what, key, base_name in (("write", "w", "np.save"), ("read", "r", "np.load"))
    ]
    numpy_rows.append(
        row(
            "store",
            f"{tag} read as numpy: read_run vs np.load",
            vs_np["plain_r"],
            unit="s",
            baseline=vs_np["np_r"],
            target=STORE_TARGET if full else None,
            note=ratio_note,
        )
    )
    baseline = (pt_size, pt_write, pt_read) if torch is not None else (None, None, None)
    write_rows(
        args.json,
        numpy_rows
        + [
            row(
                "store",
                f"{tag} {what}: zarr vs torch.save",
                value,
                unit=unit,
                baseline=base,
                peak_mib=peak,
                peak_of="VmHWM",
                note="peak: whole process",
            )
            for what, unit, value, base in zip(
                ("size on disk", "write", "read"),
                ("MiB", "s", "s"),
                (ours_size / 2**20, ours_write, ours_read),
                (baseline[0] / 2**20 if baseline[0] else None, *baseline[1:]),
                strict=True,
            )
        ],
    )


if __name__ == "__main__":
    main()
