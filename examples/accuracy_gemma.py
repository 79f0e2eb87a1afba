"""Accuracy-based deactivation of Gemma 3 270M on the built-in corpus: the README's figure.

Extracts a run on the identification part of the built-in corpus (``q01``-``q24``) for a few
languages, identifies ternary language neurons, and runs :func:`ablate_accuracy` on the held-out
evaluation part (``q25``-``q32``), timing each step. Gemma 3 270M is a base model: asked a
question alone it writes multiple-choice options or repeats the question, so each evaluation
prompt is preceded by ``--shots`` worked examples in the same language (items ``q01``,
``q02``, ``q04`` of the identification part, prompt then response, blank line between), and
an answer ends at the first blank line (``answer_end``). The evaluation items keep their ids,
so the held-out check still sees them as disjoint from the identification sequences.
Generation on CPU is slow (about 40 s for 8 answers of 48 tokens on 2 shared cores), hence
few languages, one control and short answers.

Usage (what the README's figure ran)::

    python examples/accuracy_gemma.py --out /tmp/acc-gemma --languages en,de,zh \\
        --controls 1 --max-new-tokens 32 --figure docs/gemma-accuracy.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="A new folder for the store and data.")
    parser.add_argument("--languages", default="en,zh")
    parser.add_argument("--controls", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--shots", type=int, default=3, help="Worked examples per prompt.")
    parser.add_argument("--figure", default=None, help="Write the heatmap PNG here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    import dataclasses

    from langneurons.analysis import identify
    from langneurons.demo import _gemma_path
    from langneurons.extract.accuracy import ablate_accuracy
    from langneurons.extract.corpus import builtin_corpus, write_records
    from langneurons.extract.engine import extract, load_model
    from langneurons.store import open_store

    languages = args.languages.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_model(_gemma_path(), device="cpu", dtype="float32")
    timings["load"] = time.perf_counter() - t0
    data = out / "identify.jsonl"
    write_records(data, builtin_corpus(languages, part="identify"))
    store = out / "store.zarr"
    t0 = time.perf_counter()
    extract(loaded, data, store, "gemma3-270m", per_sequence=True, max_length=256,
            progress=False)  # fmt: skip
    timings["extract"] = time.perf_counter() - t0
    shots = ("q01", "q02", "q04")[: args.shots]
    evaluation = []
    for lang in languages:
        examples = [r for r in builtin_corpus([lang], part="identify") if r.id in shots]
        prefix = "".join(f"{r.prompt}\n{r.response}\n\n" for r in examples)
        evaluation += [
            dataclasses.replace(r, prompt=prefix + r.prompt + "\n")
            for r in builtin_corpus([lang], part="evaluate")
        ]
    eval_data = out / "evaluate-fewshot.jsonl"
    write_records(eval_data, evaluation)
    opened = open_store(store, mode="r+")
    result = identify(opened.open_run("gemma3-270m"), "ternary", top_rate=args.top_rate)
    opened.save_result("gemma3-270m", "identification", "ternary", result)
    t0 = time.perf_counter()
    ds = ablate_accuracy(
        loaded,
        store,
        "gemma3-270m",
        "ternary",
        eval_data,
        languages=languages,
        controls=args.controls,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        answer_end="\n\n",
        progress=False,
        loaded=loaded,
    )
    timings["ablate_accuracy"] = time.perf_counter() - t0
    summary = {
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "identification": result.attrs["per_language"],
        "general": sum(result.attrs["per_layer"]["general"]),
        "n_neurons": ds["n_neurons"].values[:, :, 0].tolist(),
        "baseline_correct": int(ds["baseline_correct"].sum()),
        "baseline_number_ok": int(ds["baseline_number_ok"].sum()),
        "baseline_language_ok": int(ds["baseline_language_ok"].sum()),
        "items": int(ds.sizes["item"]),
    }
    print(json.dumps(summary, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.figure:
        from langneurons.analysis.accuracy import accuracy_effects
        from langneurons.reports.figures import accuracy_heatmap

        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        accuracy_heatmap(accuracy_effects(ds)).savefig(args.figure, dpi=90)


if __name__ == "__main__":
    main()
