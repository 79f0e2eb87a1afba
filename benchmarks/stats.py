"""Benchmark of the statistics on a per-sequence run the size of a 7B model.

Builds a synthetic run with per-sequence counts (default: 10 languages x 250 sequences, 32 layers
x 14336 neurons, uint16; ~4.6 GB raw) in a temporary store, writing it one piece of sequences at
a time so that this script never holds the whole run. Then, each in a fresh subprocess (so that
its peak resident memory is its own), it times

- ``language_preference_tests`` (cluster-robust, all neurons x languages) with BH FDR;
- ``bootstrap_identification`` (ternary, automatic lambda) with B = 20 and B = 200 replicates
  (and B = 200 once more without tracemalloc: the time the target row reads, with its CPU
  seconds and the machine's load average, since other jobs share the cores),

and prints wall-clock seconds and peak memory: ``VmHWM`` (the peak resident set of the subprocess;
``ru_maxrss`` where /proc is missing) and the tracemalloc peak (what numpy and Python allocated;
tracing costs a little time), with the ratios of the B = 200 peaks to the B = 20 peaks (memory
must not grow with B).

Before those, **statistics that stream** (issue 15): ``stats tests`` and ``stats probability``
(``language_preference_tests`` and ``activation_probability``, method ``cluster``) read the
per-sequence counts in one pass of the bootstrap's chunked reader (``_resample.Reader``). On runs
of 16 x 4096 neurons, 10 languages and 250 to 2,000 sequences it times each call against the
old path kept here as the baseline (:func:`old_path`: the lazy per-language sums of the
counts read through dask and computed as one graph), alternately in the same process
(medians), and the reading stage alone (the per-language sums both calls start from; old:
``cluster_sums(...).compute()``). It prints the throughput in MB/s of per-sequence counts read,
wall and CPU seconds, the dask computes per call (a ``dask.callbacks.Callback``) and the cost
against the number of sequences with a fitted intercept (fixed part) and slope (seconds per
1,000 sequences).

Usage::

    python benchmarks/stats.py            # the full size (several minutes on 2 cores)
    python benchmarks/stats.py --stream-only  # only the streaming statistics
    python benchmarks/stats.py --quick    # a small size, for a smoke test
    python benchmarks/stats.py --keep DIR # build (or reuse) the store in DIR and keep it
    python benchmarks/stats.py --json OUT # also write the headline rows for `make bench`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _table
import numpy as np

#: Issue 15: `stats stability` with B = 200 at 7B size in under 30 s on 2 cores.
STABILITY_TARGET_S = 30.0
#: Issue 15: streaming tests/probability at least 2x the old throughput (time ratio <= 1/2) at
#: 2,000 sequences, with at most a handful of dask computes per call.
STREAM_SPEEDUP = 2.0
STREAM_COMPUTES = 5
STREAM: dict[str, Any] = {
    "layers": 16,
    "neurons": 4096,
    "languages": 10,
    "sequences": [25, 50, 100, 200],
}
STREAM_QUICK: dict[str, Any] = {
    "layers": 4,
    "neurons": 1024,
    "languages": 4,
    "sequences": [10, 20, 40],
}
LANGUAGES = ["en", "zh", "de", "fr", "es", "ja", "ru", "ar", "sw", "th"]
RUN = "synthetic/base"
FULL: dict[str, Any] = {
    "layers": 32,
    "neurons": 14336,
    "languages": 10,
    "sequences": 250,
    "boot": [20, 200],
    "block": 0,  # 0: the default (block=None: as many replicates as fit in 256 MiB)
}
QUICK: dict[str, Any] = {
    "layers": 4,
    "neurons": 2048,
    "languages": 4,
    "sequences": 40,
    "boot": [5, 50],
    "block": 5,  # at this size the default block would hold all the replicates at once
}


def language_rates(
    base: np.ndarray, k: int, n_languages: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Activation probabilities of language ``k`` for the prompt and the response role.

    Base rates (shared by all languages) times a +-15% per-language jitter; 0.5% of neurons are
    specific to one language (0.3-0.8 there, < 0.02 elsewhere).
    """
    rng = np.random.default_rng([seed, k])
    p = base * np.exp(rng.normal(0.0, 0.15, size=base.shape))
    planted = np.random.default_rng([seed, 999]).permutation(base.size)[: base.size // 200]
    owner = planted % n_languages
    p[planted] = np.where(owner == k, 0.3 + 0.5 * rng.random(planted.size), 0.02 * base[planted])
    np.clip(p, 0.0, 1.0, out=p)
    prompt = np.clip(p * np.exp(rng.normal(0.0, 0.05, size=base.shape)), 0.0, 1.0)
    return prompt.astype(np.float32), p.astype(np.float32)


def sequence_piece(
    rates: tuple[np.ndarray, np.ndarray], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence counts ``[n, role, cells]`` (uint16) and tokens ``[n, role]``.

    Each sequence has its own token counts and a random effect ``g ~ Gamma(20, 1/20)`` (mean 1)
    on every rate, so tokens of one sequence are dependent; counts are ``t * p * g`` rounded
    stochastically (floor of it plus a uniform), clipped to ``[0, t]``.
    """
    cells = rates[0].size
    tokens = np.stack([rng.integers(50, 300, n), rng.integers(100, 600, n)], axis=1)
    effect = rng.gamma(20.0, 1.0 / 20.0, size=n).astype(np.float32)
    active = np.empty((n, 2, cells), dtype=np.uint16)
    buf = np.empty(cells, dtype=np.float32)
    for i in range(n):
        for r in range(2):
            t = np.float32(tokens[i, r])
            rng.random(dtype=np.float32, out=buf)
            buf += rates[r] * (t * effect[i])
            np.floor(buf, out=buf)
            np.clip(buf, 0.0, t, out=buf)
            active[i, r] = buf
    return active, tokens.astype(np.int64)


def build(path: Path, size: dict[str, Any], seed: int = 0, piece: int = 125) -> float:
    """Write the synthetic run to a new store at ``path``, ``piece`` sequences at a time."""
    from langneurons.store import Counts, create_store

    n_layers, n_neurons, k = size["layers"], size["neurons"], size["languages"]
    languages = LANGUAGES[:k] if k <= len(LANGUAGES) else [f"l{i}" for i in range(k)]
    n_seq = size["sequences"]
    base = np.random.default_rng(seed).beta(1.5, 6.0, size=n_layers * n_neurons)
    store = create_store(path)
    t0 = time.perf_counter()
    created = False
    for j, lang in enumerate(languages):
        rates = language_rates(base, j, k, seed)
        rng = np.random.default_rng([seed, j, 1])
        for start in range(0, n_seq, piece):
            n = min(piece, n_seq - start)
            active, tokens = sequence_piece(rates, n, rng)
            shaped = active.reshape(n, 2, n_layers, n_neurons)
            counts = Counts(
                [lang],
                shaped.sum(axis=0, dtype=np.int64)[None],
                tokens.sum(axis=0)[None],
                seq_n_active=shaped,
                seq_n_tokens=tokens,
                seq_language=[lang] * n,
                seq_id=[f"item{start + i}" for i in range(n)],
            )
            del active, shaped
            if not created:
                store.create_run(
                    RUN,
                    n_layers=n_layers,
                    n_neurons=n_neurons,
                    sequences=True,
                    seq_dtype="uint16",
                    counts=counts,
                )
                created = True
            elif start == 0:
                store.add_languages(RUN, counts)
            else:
                store.merge_counts(RUN, counts)
            del counts
        print(f"  wrote {lang} ({j + 1}/{k})  {time.perf_counter() - t0:6.1f} s", flush=True)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """Run one measurement and print it as JSON (called in a fresh interpreter)."""
    from langneurons.analysis.neuron_tests import language_preference_tests
    from langneurons.analysis.stability import bootstrap_identification
    from langneurons.store import open_store

    run = open_store(args.store).open_run(RUN)
    before = _table.peak_rss_mib()
    if args.trace:
        tracemalloc.start()
    t0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    out: dict[str, Any]
    if args.child == "tests":
        res = language_preference_tests(run, method="cluster", correction="fdr_bh")
        out = {"n_significant": res.attrs["n_significant"], "n_tests": res.attrs["n_tests"]}
    else:
        block = args.block or None
        res = bootstrap_identification(run, "ternary", n_boot=args.boot, seed=0, block=block)
        out = {
            "n_ok": res.attrs["n_ok"],
            "jaccard_mean": [round(float(x), 3) for x in res["jaccard_mean"].values],
            "lambda": [round(float(x), 4) for x in res["lambda_lower"].values.ravel()]
            + [round(float(x), 4) for x in res["lambda_upper"].values.ravel()],
        }
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - cpu0  # all threads of this process
    out["load"] = [round(load0, 1), round(os.getloadavg()[0], 1)]  # the machine's, before/after
    if args.trace:
        out["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    out["maxrss_mib"] = _table.peak_rss_mib()
    out["baseline_mib"] = before
    print(json.dumps(out))


def measure(
    store: Path, what: str, boot: int = 0, block: int = 0, trace: bool = False
) -> dict[str, Any]:
    """Run ``child`` in a subprocess and return its JSON."""
    cmd = [sys.executable, __file__, "--child", what, "--store", str(store), "--boot", str(boot)]
    cmd += ["--block", str(block)] + (["--trace"] if trace else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"measurement {what} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def work_store(keep: Path | None, prefix: str) -> Iterator[Path]:
    """The store to build or reuse: ``keep`` when given, else one in a temporary folder that is
    removed afterwards."""
    if keep is not None:
        yield keep
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(tmp) / "store.zarr"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Computes:
    """Counts dask computes (graph starts) while active: ``with _Computes() as c: ...; c.n``."""

    def __enter__(self) -> _Computes:
        from dask.callbacks import Callback

        counter = self

        class _Start(Callback):  # type: ignore[misc]
            def _start(self, dsk: Any) -> None:
                counter.n += 1

        self.n = 0
        self._cb = _Start()
        self._cb.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cb.__exit__(*exc)


def old_cluster(sums: Any, counts: Any, ci: float) -> Any:
    """The interval as ``activation_probability`` built it on the lazy sums before session 8
    (xarray over the whole cube; the baseline of ``stats probability``, and the reference
    ``tests/test_streamed_sums.py`` holds the numpy interval to)."""
    import xarray as xr
    from scipy import special

    n = xr.DataArray(counts.astype(np.float64), dims=("language",))
    level = (1.0 + ci) / 2.0
    t = xr.DataArray(special.stdtrit(counts - 1.0, level), dims=("language",))
    p = sums["A"] / sums["T"]
    resid = sums["S2"] - 2.0 * p * sums["SAT"] + p * p * sums["STT"]
    var = (n / (n - 1.0)) * np.maximum(resid, 0.0) / (sums["T"] * sums["T"])
    pq = p * (1.0 - p)
    known = (var > 0) & (pq > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = xr.where(known, var * sums["T"] / pq, np.nan)
    cells = [dim for dim in deff.dims if dim != "language"]
    if deff.chunks is not None:
        deff = deff.chunk({dim: -1 for dim in cells})
    floor = np.maximum(deff.quantile(0.5, dim=cells, skipna=True).fillna(1.0), 1.0)
    floor = floor.drop_vars("quantile")
    n_eff = sums["T"] / np.maximum(deff.fillna(1.0), floor)
    n_eff = n_eff * (float(special.ndtri(level)) / t) ** 2
    x = p * n_eff
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = xr.where(x > 0, special.betaincinv(x, n_eff - x + 1.0, 1.0 - level), 0.0)
        upper = xr.where(x < n_eff, special.betaincinv(x + 1.0, n_eff - x, level), 1.0)
    return xr.Dataset(
        {"p": p, "lower": lower, "upper": upper, "se": np.sqrt(var), "design_effect_floor": floor}
    )


def old_path(what: str) -> contextlib.AbstractContextManager[Any]:
    """The baseline: the per-language sums as they were computed before the streaming reader.

    ``language_preference_tests`` called ``cluster_sums(run, d).compute()`` (or ``item_sums``),
    and ``activation_probability`` built its interval (:func:`old_cluster`) on the lazy sums,
    chunked per language, and computed the result; the lazy sums read a store-backed run
    through dask in the store's chunks. Patching the streaming sums (tests) or the streaming
    interval (probability) with these reproduces that path exactly.
    """
    from unittest import mock

    from langneurons.analysis import _resample

    def lazy(run: Any, d: Any, cluster: str) -> Any:
        if cluster == "item":
            sums, n = _resample.item_sums(run, d)
        else:
            sums, n = _resample.cluster_sums(run, d), d.counts
        return (sums.compute() if what == "tests" else sums), n

    if what == "tests":
        return mock.patch("langneurons.analysis.neuron_tests.streamed_sums", lazy)

    def interval(run: Any, d: Any, cluster: str, ci: float) -> Any:
        sums, n = lazy(run, d, cluster)
        return old_cluster(sums.chunk({"language": 1}), n, ci).compute(), n

    return mock.patch("langneurons.analysis.uncertainty._streamed_cluster", interval)


def stream_call(store: Path, what: str, old: bool) -> tuple[float, int, float]:
    """Seconds, dask computes and CPU seconds (all threads) of one call on the run in
    ``store`` (opened afresh)."""
    from langneurons.analysis import _resample
    from langneurons.analysis.neuron_tests import language_preference_tests
    from langneurons.analysis.uncertainty import activation_probability
    from langneurons.store import open_store

    run = open_store(store).open_run(RUN)

    def sums() -> None:
        """The reading stage alone: the per-language sums both calls start from."""
        d = _resample.design(run, "response", "the sums")
        if old:
            _resample.cluster_sums(run, d).compute()
        else:
            _resample.streamed_sums(run, d, "sequence")

    call = {
        "tests": lambda: language_preference_tests(run, method="cluster", correction="fdr_bh"),
        "probability": lambda: activation_probability(run, method="cluster"),
        "sums": sums,
    }[what]
    with (
        old_path(what) if old and what != "sums" else contextlib.nullcontext(),
        _Computes() as computes,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # the old graph's 0/0 on empty neurons
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, computes.n, cpu


def streaming(size: dict[str, Any], repeat: int, keep: Path | None) -> list[dict[str, Any]]:
    """Old vs streaming ``tests`` and ``probability`` over growing sequence counts; table rows."""
    import statistics

    full = size is STREAM
    rows: list[dict[str, Any]] = []
    fits: dict[str, dict[str, tuple[float, float]]] = {}
    with work_store(keep, "langneurons-stream-") as base:
        base.mkdir(parents=True, exist_ok=True)
        stores = {}
        for per_language in size["sequences"]:
            path = base / f"seq{per_language}.zarr"
            if not (path / "zarr.json").exists():
                build(path, {**size, "sequences": per_language}, piece=200)
            stores[per_language * size["languages"]] = path
        cells = size["layers"] * size["neurons"]
        print(
            f"\nstreaming statistics: {size['layers']} x {size['neurons']} neurons, "
            f"{size['languages']} languages, uint16, role response; {repeat} alternating "
            f"repeats, medians"
        )
        print(
            f"{'call':12s} {'sequences':>9s} {'MB read':>8s} {'old s':>7s} {'new s':>7s} "
            f"{'old MB/s':>9s} {'new MB/s':>9s} {'speed-up':>9s} {'computes old/new':>17s} "
            f"{'old CPU':>7s} {'new CPU':>7s} {'CPU x':>8s}"
        )
        for what in ("sums", "tests", "probability"):
            for arm in (True, False):  # untimed: imports and first reads of both arms
                stream_call(next(iter(stores.values())), what, arm)
            curve: dict[str, list[tuple[int, float, float]]] = {"old": [], "new": []}
            last: dict[str, Any] = {}
            for n_seq, path in stores.items():
                mb = n_seq * cells * 2 / 1e6  # the response role of seq_n_active, uint16
                times: dict[str, list[float]] = {"old": [], "new": []}
                cpus: dict[str, list[float]] = {"old": [], "new": []}
                calls: dict[str, int] = {}
                for _ in range(repeat):
                    for arm in ("old", "new"):
                        seconds, calls[arm], cpu = stream_call(path, what, arm == "old")
                        times[arm].append(seconds)
                        cpus[arm].append(cpu)
                old_s, new_s = (statistics.median(times[a]) for a in ("old", "new"))
                old_cpu, new_cpu = (statistics.median(cpus[a]) for a in ("old", "new"))
                curve["old"].append((n_seq, old_s, old_cpu))
                curve["new"].append((n_seq, new_s, new_cpu))
                print(
                    f"{what:12s} {n_seq:9d} {mb:8.1f} {old_s:7.2f} {new_s:7.2f} "
                    f"{mb / old_s:9.0f} {mb / new_s:9.0f} {old_s / new_s:8.2f}x "
                    f"{calls['old']:>8d} / {calls['new']:<6d} {old_cpu:7.2f} {new_cpu:7.2f} "
                    f"{old_cpu / new_cpu:7.2f}x",
                    flush=True,
                )
                last = {
                    "n": n_seq,
                    "mb": mb,
                    "old": old_s,
                    "new": new_s,
                    "calls": calls,
                    "cpu": (old_cpu, new_cpu),
                }
            fits[what] = {}
            for arm in ("old", "new"):
                x = np.array([c[0] for c in curve[arm]], dtype=float)
                for column, clock in ((1, "wall"), (2, "CPU")):
                    y = np.array([c[column] for c in curve[arm]])
                    slope, intercept = np.polyfit(x, y, 1)
                    worst = float(np.max(np.abs(intercept + slope * x - y) / y))
                    if clock == "wall":
                        fits[what][arm] = (float(intercept), float(slope))
                    print(
                        f"  {what} {arm} {clock}: cost = {intercept:.2f} s + "
                        f"{slope * 1000:.2f} s per 1,000 sequences (least-squares line; "
                        f"largest relative residual {worst:.0%})"
                    )
            tag = f"{size['layers']}x{size['neurons']} {last['n']:,} seq"
            icpt, slope = fits[what]["new"]
            rows.append(
                _table.row(
                    "stats",
                    f"{tag} "
                    + ("reading stage (per-language sums)" if what == "sums" else f"stats {what}")
                    + ": streaming vs old path, time",
                    last["new"],
                    unit="s",
                    baseline=last["old"],
                    target=1.0 / STREAM_SPEEDUP if full and what != "sums" else None,
                    note=(
                        f"{last['mb'] / last['new']:.0f} vs {last['mb'] / last['old']:.0f} MB/s "
                        f"({last['old'] / last['new']:.2f}x; CPU s {last['cpu'][1]:.2f} vs "
                        f"{last['cpu'][0]:.2f}); fit {icpt:.2f} s + {slope * 1000:.2f} s/1k seq"
                    ),
                )
            )
            if what == "sums":
                continue
            rows.append(
                _table.row(
                    "stats",
                    f"{tag} stats {what}: dask computes per call",
                    float(last["calls"]["new"]),
                    unit="calls",
                    baseline=float(last["calls"]["old"]),
                    target=float(STREAM_COMPUTES) if full else None,
                    target_of="value",
                    note="store-backed run; old: the lazy sums",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small size (smoke test)")
    parser.add_argument("--keep", type=Path, help="build the store here (reused if present)")
    parser.add_argument(
        "--sequences", type=int, help="sequences per language (default: 250; 40 with --quick)"
    )
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    parser.add_argument(
        "--stream-only", action="store_true", help="only the streaming tests/probability"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the streaming calls")
    parser.add_argument("--child", choices=["tests", "boot"], help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--boot", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    stream_keep = None if args.keep is None else args.keep.with_name(args.keep.name + "-stream")
    stream_rows = streaming(STREAM_QUICK if args.quick else STREAM, args.repeat, stream_keep)
    if args.stream_only:
        _table.write_rows(args.json, stream_rows)
        return
    size = dict(QUICK if args.quick else FULL)
    if args.sequences:
        size["sequences"] = args.sequences
    cells = size["layers"] * size["neurons"]
    raw = size["languages"] * size["sequences"] * 2 * cells * 2
    print(
        f"per-sequence run: {size['languages']} languages x {size['sequences']} sequences, "
        f"{size['layers']} x {size['neurons']} neurons, uint16 ({raw / 2**30:.2f} GiB raw); "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    with work_store(args.keep, "langneurons-bench-") as store:
        if not (store / "zarr.json").exists():
            seconds = build(store, size)
            print(f"built in {seconds:.1f} s (builder peak RSS {_table.peak_rss_mib():.0f} MiB)")
        else:
            print(f"reusing {store}")
        rows: list[tuple[str, dict[str, Any]]] = []
        print("\nlanguage_preference_tests (cluster, all neurons x languages, BH FDR) ...")
        rows.append(("tests + FDR", measure(store, "tests", trace=True)))
        for b in size["boot"]:
            print(
                f"bootstrap_identification (ternary, auto lambda), B = {b}, "
                f"block = {size['block'] or 'default'} ...",
                flush=True,
            )
            rows.append((f"bootstrap B={b}", measure(store, "boot", b, size["block"], True)))
        # the time target is read without tracemalloc (which slows Python's allocations)
        print(f"bootstrap_identification, B = {size['boot'][-1]}, untraced ...", flush=True)
        timed = measure(store, "boot", size["boot"][-1], size["block"])
        print(
            f"untraced B={size['boot'][-1]}: {timed['seconds']:.1f} s, "
            f"{timed['cpu_seconds']:.1f} CPU s, load average {timed['load'][0]}-{timed['load'][1]}"
        )
        print(
            f"\n{'call':18s} {'seconds':>8s} {'peak RSS MiB':>13s} {'traced peak MiB':>16s} "
            f"{'(RSS at start)':>15s}"
        )
        for name, row in rows:
            print(
                f"{name:18s} {row['seconds']:8.1f} {row['maxrss_mib']:13.0f} "
                f"{row['traced_peak_mib']:16.0f} {row['baseline_mib']:15.0f}"
            )
        small, large = rows[-2][1], rows[-1][1]
        b0, b1 = size["boot"]
        print(
            f"\nB={b1} vs B={b0} (replicates x{b1 / b0:.0f}): time x"
            f"{large['seconds'] / small['seconds']:.2f}, peak RSS x"
            f"{large['maxrss_mib'] / small['maxrss_mib']:.2f}, traced peak x"
            f"{large['traced_peak_mib'] / small['traced_peak_mib']:.2f}"
        )
        per_rep = (large["seconds"] - small["seconds"]) / (b1 - b0)
        print(f"marginal cost per replicate: {per_rep:.2f} s")
        print(
            f"{rows[0][1]['n_significant']} of {rows[0][1]['n_tests']} tests significant; "
            f"bootstrap mean Jaccard per language {large['jaccard_mean']}"
        )
        tag = "7B" if (size["layers"], size["neurons"]) == (32, 14336) else "quick"
        tests = rows[0][1]
        _table.write_rows(
            args.json,
            stream_rows
            + [
                _table.row(
                    "stats",
                    f"{tag} tests + FDR: peak RSS vs raw data",
                    tests["maxrss_mib"],
                    unit="MiB",
                    baseline=raw / 2**20,
                    peak_mib=tests["maxrss_mib"],
                    peak_of="VmHWM",
                    note=(
                        f"{tests['seconds']:.0f} s; "
                        f"{raw / 2**20 / tests['seconds']:.1f} MiB/s of raw counts"
                    ),
                ),
                _table.row(
                    "stats",
                    f"{tag} bootstrap B={b1} vs B={b0}: time",
                    large["seconds"],
                    unit="s",
                    baseline=small["seconds"],
                    peak_mib=large["maxrss_mib"],
                    peak_of="VmHWM",
                    note=f"replicates x{b1 / b0:.0f}; {per_rep:.2f} s per replicate",
                ),
                _table.row(
                    "stats",
                    f"{tag} stats stability (bootstrap_identification) B={b1}",
                    timed["seconds"],
                    unit="s",
                    target=STABILITY_TARGET_S if tag == "7B" else None,
                    target_of="value",
                    note=(
                        f"{size['languages']} x {size['sequences']} sequences, ternary auto "
                        f"lambda, {os.cpu_count()} CPUs, untraced; {timed['cpu_seconds']:.0f} "
                        f"CPU s; load average {timed['load'][0]}-{timed['load'][1]}"
                    ),
                ),
                _table.row(
                    "stats",
                    f"{tag} bootstrap B={b1} vs B={b0}: peak RSS",
                    large["maxrss_mib"],
                    unit="MiB",
                    baseline=small["maxrss_mib"],
                    peak_mib=large["maxrss_mib"],
                    peak_of="VmHWM",
                    note="memory must not grow with B",
                ),
            ],
        )


if __name__ == "__main__":
    main()
