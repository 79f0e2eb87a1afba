"""Out-of-core benchmark: analyses of a 70B-size per-sequence run under a hard memory limit.

Builds a synthetic run with per-sequence counts the size of a 70B model (80 layers x 28672
neurons, 10 languages, uint16) in a temporary store, one piece of sequences at a time with the
generator of ``benchmarks/stats.py``, so that this script never holds the whole run. Its raw
per-sequence counts are larger than the address space each analysis may use. Then, each in a
fresh subprocess whose address space is capped with ``resource.setrlimit(RLIMIT_AS, ...)``
(glibc's malloc arenas capped with ``MALLOC_ARENA_MAX=2`` so that the cap bounds data, not
thread reservations), it times

- ``identify`` (ternary with the automatic lambda, and LAPE) on the run opened from the store,
  against the same calls on its per-language counts loaded into numpy first;
- ``language_preference_tests`` (cluster-robust, all neurons x languages) with BH FDR;
- ``bootstrap_identification`` (ternary, automatic lambda) with B = 10 replicates,

all on ``role="all"`` (both stored roles), so that every analysis that reads per-sequence counts
reads every byte of them. Last, without the memory limit (a cluster runs worker processes), it
times the tests under dask's default threaded scheduler (the run read through zarr in the
process) against a ``distributed.LocalCluster`` of one single-threaded worker process per CPU
(the workers read it), alternately (its start-up is printed apart):
the crossover on this machine (a cluster pays for moving chunks between processes and
helps only when more cores or machines are available than one process can use).

It prints wall-clock seconds, the peak resident set (``VmHWM``), the
peak address space (``VmPeak``) against the limit, and the peak resident set over the raw
per-sequence data (below 1: the analysis ran chunk by chunk).

Usage::

    python benchmarks/scale.py              # the full size (about 7 minutes on 2 cores)
    python benchmarks/scale.py --quick      # a small size, for a smoke test (not out-of-core)
    python benchmarks/scale.py --keep DIR   # build (or reuse) the store in DIR and keep it
    python benchmarks/scale.py --json OUT   # also write the headline rows for `make bench`
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _table import row, write_rows
from stats import RUN, build, work_store

FULL: dict[str, Any] = {
    "layers": 80,
    "neurons": 28672,
    "languages": 10,
    "sequences": 128,
    "boot": 10,
    "limit_mib": 3072,  # 3 GiB: the tests peak at about 2.8 GiB of address space
}
QUICK: dict[str, Any] = {
    "layers": 8,
    "neurons": 2048,
    "languages": 10,
    "sequences": 16,
    "boot": 3,
    "limit_mib": 2048,
}
#: The environment of every measuring subprocess: two malloc arenas, so that the address-space
#: limit is not spent on 64 MiB arena reservations of each thread.
CHILD_ENV = {"MALLOC_ARENA_MAX": "2"}


def proc_status() -> dict[str, float]:
    """``VmHWM`` (peak resident) and ``VmPeak`` (peak address space) of this process, in MiB."""
    out = {"VmHWM": float("nan"), "VmPeak": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1]) / 1024
    except OSError:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def raw_bytes(size: dict[str, Any]) -> int:
    """Bytes of the raw per-sequence counts (uint16, both roles)."""
    cells = size["layers"] * size["neurons"]
    return int(size["languages"] * size["sequences"] * 2 * cells * 2)


def _timed(fn: Any) -> tuple[float, Any]:
    """Wall-clock seconds of one call, and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def child(args: argparse.Namespace) -> None:
    """Run one measurement under the memory limit and print it as JSON (a fresh interpreter)."""
    limit = args.limit_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out: dict[str, Any] = {"limit": "RLIMIT_AS", "limit_mib": args.limit_mib}
    try:
        from langneurons.analysis import (
            IdentifyParams,
            bootstrap_identification,
            identify,
            language_preference_tests,
        )
        from langneurons.store import open_store

        run = open_store(args.store).open_run(RUN)
        out["start_mib"] = proc_status()["VmHWM"]
        if args.child == "identify":
            for method in ("ternary", "lape"):
                seconds, res = _timed(lambda m=method: identify(run, m, role="all"))
                out[method] = {"seconds": seconds, "n_selected": res.attrs["n_selected"]}
                if "lambda" in res.attrs:
                    out[method]["lambda"] = res.attrs["lambda"]
                del res
            out["after_store_mib"] = proc_status()["VmHWM"]
            # the reference: the same calls on the per-language counts already in numpy
            counts = run[["n_active", "n_tokens"]].load()
            for method in ("ternary", "lape"):
                seconds, res = _timed(lambda m=method: identify(counts, m, role="all"))
                out[f"{method}_numpy"] = {"seconds": seconds, "n_selected": res.attrs["n_selected"]}
                del res
        elif args.child == "tests":
            seconds, res = _timed(
                lambda: language_preference_tests(
                    run, role="all", method="cluster", correction="fdr_bh"
                )
            )
            out.update(
                seconds=seconds,
                n_significant=res.attrs["n_significant"],
                n_tests=res.attrs["n_tests"],
            )
        else:
            seconds, res = _timed(
                lambda: bootstrap_identification(
                    run, n_boot=args.boot, seed=0, params=IdentifyParams(role="all")
                )
            )
            out.update(
                seconds=seconds,
                n_ok=res.attrs["n_ok"],
                jaccard_mean=[round(float(x), 3) for x in res["jaccard_mean"].values],
            )
    except Exception as exc:  # report what failed under the limit, e.g. a MemoryError
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=-8)
    status = proc_status()
    out["maxrss_mib"], out["vmpeak_mib"] = status["VmHWM"], status["VmPeak"]
    print(json.dumps(out))


def cluster_vs_threaded(store: Path, repeat: int) -> dict[str, float]:
    """Median seconds of the tests under the threaded scheduler and on a LocalCluster."""
    import statistics

    import dask
    from distributed import Client, LocalCluster

    from langneurons.analysis import language_preference_tests
    from langneurons.store import open_store

    def tests() -> None:
        # store-backed: read through zarr in this process under the default scheduler, by
        # the workers (through dask) when the cluster's client is the default
        run = open_store(store).open_run(RUN)
        language_preference_tests(run, role="all", method="cluster", correction="fdr_bh")

    workers = os.cpu_count() or 1
    threaded, cluster = [], []
    t0 = time.perf_counter()
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as lc,
        Client(lc),
    ):
        start = time.perf_counter() - t0
        for _ in range(repeat):
            with dask.config.set(scheduler="threads"):
                threaded.append(_timed(tests)[0])
            cluster.append(_timed(tests)[0])  # the client is the default scheduler
    return {
        "threaded": statistics.median(threaded),
        "cluster": statistics.median(cluster),
        "start": start,
        "workers": workers,
    }


def cluster_row(store: Path, tag: str, repeat: int) -> dict[str, Any]:
    """Print the LocalCluster-vs-threaded timing of the tests and return its table row."""
    cl = cluster_vs_threaded(store, repeat)
    ratio = cl["cluster"] / cl["threaded"]
    verdict = "helps" if ratio < 1 else "does not help"
    print(
        f"tests + FDR: threaded {cl['threaded']:.2f} s, LocalCluster ({cl['workers']} "
        f"workers x 1 thread) {cl['cluster']:.2f} s (+{cl['start']:.1f} s to start): "
        f"{ratio:.2f}x; a cluster {verdict} on this machine"
    )
    return row(
        "scale",
        f"{tag} tests + FDR: LocalCluster vs threaded",
        cl["cluster"],
        unit="s",
        baseline=cl["threaded"],
        note=f"{cl['workers']} workers; cluster start {cl['start']:.1f} s not included; "
        f"a cluster {verdict} here",
    )


def measure(store: Path, what: str, size: dict[str, Any]) -> dict[str, Any]:
    """Run ``child`` in a subprocess under the limit and return its JSON."""
    cmd = [sys.executable, __file__, "--child", what, "--store", str(store)]
    cmd += ["--boot", str(size["boot"]), "--limit-mib", str(size["limit_mib"])]
    env = {**os.environ, **CHILD_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = proc.stdout.strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (IndexError, json.JSONDecodeError):
        # killed outright (e.g. a thread or BLAS buffer that could not be mapped)
        return {
            "error": f"exit status {proc.returncode}",
            "traceback": proc.stderr[-3000:],
            "maxrss_mib": float("nan"),
            "vmpeak_mib": float("nan"),
        }


def _line(name: str, seconds: float, mem: dict[str, Any], raw_mib: float, detail: str) -> str:
    """One line of the printed table."""
    return (
        f"{name:28s} {seconds:8.1f} {mem['maxrss_mib']:13,.0f} {mem['vmpeak_mib']:12,.0f} "
        f"{mem['maxrss_mib'] / raw_mib:10.3f}  {detail}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small size (smoke test)")
    parser.add_argument("--keep", type=Path, help="build the store here (reused if present)")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    parser.add_argument("--sequences", type=int, help="sequences per language (default: size)")
    parser.add_argument("--limit-mib", type=int, help="address-space limit of each analysis")
    parser.add_argument("--child", choices=["identify", "tests", "boot"], help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--boot", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    size = dict(QUICK if args.quick else FULL)
    if args.sequences:
        size["sequences"] = args.sequences
    if args.limit_mib:
        size["limit_mib"] = args.limit_mib
    raw = raw_bytes(size)
    raw_mib = raw / 2**20
    limit_mib = size["limit_mib"]
    n_cells = size["layers"] * size["neurons"]
    tag = "70B" if (size["layers"], size["neurons"]) == (80, 28672) else "quick"
    print(
        f"per-sequence run: {size['languages']} languages x {size['sequences']} sequences, "
        f"{size['layers']} x {size['neurons']} neurons, uint16: {raw_mib:,.0f} MiB raw; "
        f"each analysis runs under RLIMIT_AS = {limit_mib:,} MiB "
        f"(raw / limit = {raw_mib / limit_mib:.2f}); {os.cpu_count()} CPUs",
        flush=True,
    )
    if raw_mib <= limit_mib:
        print("  (the raw data fit under the limit: a smoke test, not an out-of-core run)")
    failed: list[str] = []
    with work_store(args.keep, "langneurons-bench-scale-") as store:
        if not (store / "zarr.json").exists():
            seconds = build(store, size, piece=16)
            disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
            print(
                f"built in {seconds:.1f} s ({disk / 2**20:,.0f} MiB on disk; builder peak RSS "
                f"{proc_status()['VmHWM']:,.0f} MiB)",
                flush=True,
            )
        else:
            print(f"reusing {store} (its size must match the one above)")
        labels = {
            "identify": "identify (ternary auto lambda, LAPE) from the store, then on numpy",
            "tests": "language_preference_tests (cluster, all neurons x languages) + BH FDR",
            "boot": f"bootstrap_identification (ternary, auto lambda), B = {size['boot']}",
        }
        results: dict[str, dict[str, Any]] = {}
        for what, label in labels.items():
            print(f"{label} ...", flush=True)
            res = measure(store, what, size)
            results[what] = res
            if "error" in res:
                failed.append(what)
                print(f"  FAILED under the limit: {res['error']}\n{res['traceback']}", flush=True)
        print(
            f"\n{'call':28s} {'seconds':>8s} {'peak RSS MiB':>13s} {'peak VM MiB':>12s} "
            f"{'RSS / raw':>10s}  result"
        )
        ident = results["identify"]
        if "error" not in ident:
            mem = ident
            for method in ("ternary", "lape"):
                r = ident[method]
                lam = f"lambda {r['lambda']:.4f}, " if "lambda" in r else ""
                detail = f"{lam}{r['n_selected']:,} selected"
                print(_line(f"identify {method} (store)", r["seconds"], mem, raw_mib, detail))
                numpy_s = ident[f"{method}_numpy"]["seconds"]
                print(f"{f'identify {method} (numpy)':28s} {numpy_s:8.1f}")
        tests, boot = results["tests"], results["boot"]
        if "error" not in tests:
            detail = f"{tests['n_significant']:,} of {tests['n_tests']:,} significant"
            print(_line("tests + FDR", tests["seconds"], tests, raw_mib, detail))
        if "error" not in boot:
            detail = f"{boot['n_ok']} ok, mean Jaccard {boot['jaccard_mean']}"
            print(_line(f"bootstrap B={size['boot']}", boot["seconds"], boot, raw_mib, detail))
        print(
            f"limit: RLIMIT_AS {limit_mib:,} MiB per analysis (MALLOC_ARENA_MAX=2); raw "
            f"per-sequence data {raw_mib:,.0f} MiB = {raw_mib / limit_mib:.2f} x the limit"
        )
        limit_note = f"RLIMIT_AS {limit_mib} MiB"
        rows = []
        for method, name in (("ternary", "ternary auto lambda"), ("lape", "LAPE")):
            ok = "error" not in ident
            rows.append(
                row(
                    "scale",
                    f"{tag} identify {name}: store vs numpy",
                    ident[method]["seconds"] if ok else None,
                    unit="s",
                    baseline=ident[f"{method}_numpy"]["seconds"] if ok else None,
                    peak_mib=ident["maxrss_mib"] if ok else None,
                    peak_of="VmHWM",
                    note=limit_note if ok else f"FAILED: {ident['error'][:60]}; {limit_note}",
                )
            )
        for res, name in ((tests, "tests + FDR"), (boot, f"bootstrap B={size['boot']}")):
            ok = "error" not in res
            if ok:
                seconds = res["seconds"]
                note = f"{seconds:.0f} s, {seconds / n_cells * 1e6:.1f} us/neuron; {limit_note}"
            else:
                note = f"FAILED: {res['error'][:60]}; {limit_note}"
            rows.append(
                row(
                    "scale",
                    f"{tag} {name}: peak RSS vs raw data",
                    res["maxrss_mib"] if ok else None,
                    unit="MiB",
                    baseline=raw_mib,
                    peak_mib=res["maxrss_mib"] if ok else None,
                    peak_of="VmHWM",
                    note=note,
                )
            )
        print("tests on a LocalCluster vs the threaded scheduler ...", flush=True)
        if importlib.util.find_spec("distributed") is None:
            print("  skipped: dask.distributed is not installed (pip install '.[distributed]')")
        else:
            rows.append(cluster_row(store, tag, 1 if args.quick else 3))
        write_rows(args.json, rows)
    if failed:
        sys.exit(f"failed under the memory limit: {', '.join(failed)}")


if __name__ == "__main__":
    main()
