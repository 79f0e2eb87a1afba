"""Reading a run and saving a result without xarray (``read_run``, ``save_result`` of a
PlainDataset) against the xarray path (``open_run(...)[...].load()``, ``save_result`` of the
Dataset), at Mistral-7B size (32 layers x 14336 neurons, 10 languages).

The result saved is an identification (ternary, lambda 0.05) of the run. Both arms are timed
alternately, ``--repeat`` times, and the medians compared: in one process (imports done: the
read and the save alone), and as fresh processes that import what they need, read the run's
counts, and save the result (loaded from a pickle, the same in both arms), which is what the
command line's ``identify`` pays besides its computation. Prints the medians and their ratios;
run it on a quiet machine for absolute numbers.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from identify import synthetic_run

from langneurons.analysis import identify
from langneurons.plain import PlainDataset
from langneurons.store import Counts, create_store, open_store

VARIABLES = ["n_active", "n_tokens"]
PROCESS = {
    "plain": """
import pickle, sys, time
t0 = time.perf_counter()
from langneurons.store import open_store
store = open_store({path!r}, mode="r+")
run = store.read_run("m/base", variables={variables!r})
result = pickle.load(open({result!r}, "rb"))
store.save_result("m/base", "identification", "p{i}", result)
assert not {{"xarray", "pandas", "dask"}} & set(sys.modules)
print(time.perf_counter() - t0)
""",
    "xarray": """
import pickle, sys, time
t0 = time.perf_counter()
from langneurons.store import open_store
store = open_store({path!r}, mode="r+")
run = store.open_run("m/base")[{variables!r}].load()
result = pickle.load(open({result!r}, "rb")).to_xarray()
store.save_result("m/base", "identification", "x{i}", result)
print(time.perf_counter() - t0)
""",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--neurons", type=int, default=14336)
    parser.add_argument("--repeat", type=int, default=5, help="alternating timed repeats")
    args = parser.parse_args()
    run = synthetic_run(args.layers, args.neurons)
    work = Path(tempfile.mkdtemp(prefix="langneurons-plain-"))
    try:
        path = work / "s.zarr"
        counts = Counts(
            [str(x) for x in run["language"].values], run["n_active"].values, run["n_tokens"].values
        )
        create_store(path).create_run(
            "m/base", n_layers=args.layers, n_neurons=args.neurons, counts=counts
        )
        del counts, run
        store = open_store(path, mode="r+")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = identify(store.open_run("m/base"), lam=0.05)
        plain = PlainDataset.from_xarray(result)
        pickled = work / "result.pkl"
        pickled.write_bytes(pickle.dumps(plain))
        times: dict[str, list[float]] = {
            k: [] for k in ("read_x", "read_p", "save_x", "save_p", "proc_x", "proc_p")
        }
        for i in range(args.repeat):
            t0 = time.perf_counter()
            store.open_run("m/base")[VARIABLES].load()
            times["read_x"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.read_run("m/base", variables=VARIABLES)
            times["read_p"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.save_result("m/base", "identification", "x", result)
            times["save_x"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.save_result("m/base", "identification", "p", plain)
            times["save_p"].append(time.perf_counter() - t0)
            for arm, key in (("xarray", "proc_x"), ("plain", "proc_p")):
                code = PROCESS[arm].format(
                    path=str(path), variables=VARIABLES, result=str(pickled), i=i
                )
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
                times[key].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"read_run vs save_result(PlainDataset): {args.layers} x {args.neurons}, 10 languages")
    print(f"medians of {args.repeat}, alternating   xarray s   plain s   plain/xarray")
    for what, x, p in (
        ("read (n_active, n_tokens)", "read_x", "read_p"),
        ("save identification", "save_x", "save_p"),
        ("fresh process: read + save", "proc_x", "proc_p"),
    ):
        print(f"{what:<34}{med[x]:>9.3f}{med[p]:>10.3f}{med[p] / med[x]:>14.2f}")


if __name__ == "__main__":
    main()
