"""Extraction benchmark on a tiny model, CPU: hook overhead and tokens against the two-pass method.

1. Time of ``extract`` (hooks, on-device counting, and the store commits) over the built-in
   ten-language corpus, against a bare forward pass over the very same batches without hooks.
   Target: at most 1.15x.
2. Token positions the model processes, against the reference pipeline's two-pass method (the
   full prompt + response, then the prompt alone, each batched in file order with a fixed batch
   size and padded to the longest sequence in the batch, as the reference code does). Target: at
   least 1.8x fewer. The unpadded ratio (2P + R) / (P + R) is printed too.

All numbers are measured in one run of this script. ``--quick`` times one repeat instead of
three; ``--json OUT`` also writes the headline rows for ``make bench``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _table import peak_rss_mib, row, write_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--unit-size", type=int, default=32)
    parser.add_argument("--reference-batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed repeat (smoke test)")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1

    import torch

    from langneurons.extract.corpus import builtin_corpus, write_records
    from langneurons.extract.engine import (
        bucket_batches,
        encode,
        extract,
        forward_kwargs,
        load_model,
        pad_batch,
        plan_units,
    )
    from langneurons.extract.tiny import tiny_model

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="langneurons-bench-extract-"))
    try:
        model_dir = tiny_model(
            "llama",
            seed=0,
            path=work / "model",
            layers=args.layers,
            hidden=args.hidden,
            intermediate=args.intermediate,
        )
        records = builtin_corpus()
        data = work / "corpus.jsonl"
        write_records(data, records)
        loaded = load_model(model_dir, device="cpu", dtype="float32")
        tok = loaded.tokenizer
        encoded = [encode(r, tok, chat_template=True, max_length=1024) for r in records]

        # -- 1. hook overhead: the same batches, with and without counting
        kwargs = forward_kwargs(loaded.model)
        languages = list(dict.fromkeys(r.language for r in records))
        batches = []
        for unit in plan_units(records, languages, args.unit_size):
            lengths = [encoded[i].length for i in unit.positions]
            batches += [
                [unit.positions[j] for j in b] for b in bucket_batches(lengths, args.batch_tokens)
            ]
        pad = int(tok.pad_token_id or 0)
        prepared = []
        for batch in batches:
            ids, mask = pad_batch([encoded[i] for i in batch], pad)
            prepared.append((ids, mask.sum(-1).to(torch.int64)))

        def bare() -> None:
            with torch.inference_mode():
                for ids, attention in prepared:
                    loaded.model(input_ids=ids, attention_mask=attention, **kwargs)

        def ours() -> None:
            store = work / "store.zarr"
            shutil.rmtree(store, ignore_errors=True)
            extract(
                model_dir,
                data,
                store,
                "bench",
                chat_template=True,
                batch_tokens=args.batch_tokens,
                progress=False,
                loaded=loaded,
            )

        bare()  # warm-up
        ours()
        # alternate the two, so that a drift in the machine's speed affects both alike
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(args.repeat):
            times["bare"].append(_timed(bare))
            times["ours"].append(_timed(ours))
        t_bare, t_ours = min(times["bare"]), min(times["ours"])

        # -- 2. tokens processed: one pass over prompt + response vs the two-pass reference
        ours_positions = sum(max(encoded[i].length for i in b) * len(b) for b in batches)
        ours_real = sum(e.length for e in encoded)
        full_lengths, prefix_lengths = [], []
        for r in records:
            prompt_text = tok.apply_chat_template(
                [{"role": "user", "content": r.prompt}], add_generation_prompt=True, tokenize=False
            )
            full_lengths.append(len(tok(prompt_text + (r.response or ""))["input_ids"]))
            prefix_lengths.append(len(tok(prompt_text)["input_ids"]))
        ref_positions = _padded(full_lengths, args.reference_batch_size) + _padded(
            prefix_lengths, args.reference_batch_size
        )
        ref_real = sum(full_lengths) + sum(prefix_lengths)
        # without the chat template (plain prompt + response text): the saving is smaller, since
        # the template's tokens no longer count twice in the reference
        plain_full = [len(tok(r.prompt + (r.response or ""))["input_ids"]) for r in records]
        plain_prefix = [len(tok(r.prompt)["input_ids"]) for r in records]
        plain_ours, plain_ref = sum(plain_full), sum(plain_full) + sum(plain_prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"extract benchmark: tiny llama {args.layers} layers x {args.intermediate} neurons, "
        f"{len(records)} records (built-in corpus), CPU, {torch.get_num_threads()} threads"
    )
    print(f"{'measure':<46}{'value':>12}")
    print(f"{'bare forward over the same batches (s)':<46}{t_bare:>12.3f}")
    print(f"{'langneurons extract, incl. store commits (s)':<46}{t_ours:>12.3f}")
    print(f"{'ratio extract / bare forward (target <= 1.15)':<46}{t_ours / t_bare:>12.3f}")
    print(f"{'token positions, two-pass reference':<46}{ref_positions:>12,}")
    print(f"{'token positions, langneurons one pass':<46}{ours_positions:>12,}")
    print(f"{'ratio reference / ours (target >= 1.8)':<46}{ref_positions / ours_positions:>12.3f}")
    print(f"{'unpadded ratio (2P + R) / (P + R)':<46}{ref_real / ours_real:>12.3f}")
    print(f"{'unpadded ratio, no chat template':<46}{plain_ref / plain_ours:>12.3f}")
    peak = peak_rss_mib()
    write_rows(
        args.json,
        [
            row(
                "extract",
                "tiny llama: extract vs bare forward",
                t_ours,
                unit="s",
                baseline=t_bare,
                peak_mib=peak,
                peak_of="VmHWM",
                target=1.15,
                note="tiny random model, not real weights; peak: whole process",
            ),
            row(
                "extract",
                "token positions: one pass vs two-pass reference",
                ours_positions,
                unit="tokens",
                baseline=ref_positions,
                peak_mib=peak,
                peak_of="VmHWM",
                target=1 / 1.8,
                note=(
                    f"reference / ours = {ref_positions / ours_positions:.2f} (target >= 1.8x "
                    "fewer); chat template, padded batches"
                ),
            ),
            row(
                "extract",
                "token positions, no chat template, unpadded",
                plain_ours,
                unit="tokens",
                baseline=plain_ref,
                note=f"reference / ours = {plain_ref / plain_ours:.2f}: the saving without the "
                "template (reported, no target)",
            ),
        ],
    )


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def _padded(lengths: list[int], batch_size: int) -> int:
    """Token positions of fixed-size batches in file order, each padded to its longest."""
    total = 0
    for k in range(0, len(lengths), batch_size):
        chunk = lengths[k : k + batch_size]
        total += max(chunk) * len(chunk)
    return int(np.int64(total))


if __name__ == "__main__":
    main()
