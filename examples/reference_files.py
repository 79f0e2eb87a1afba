"""Write small activation files in the reference pipeline's format, for the quick start.

The reference code saved, per language, ``activation.{lang}.{tag}.pt`` (prompt + response) and
``prefix.activation.{lang}.{tag}.pt`` (prompt alone), each ``{"total_tokens": int,
"over_zero": int64[layers, neurons]}``. This script writes such files with a few language-bound
neurons per language (and, as in real files, a few cells where full minus prefix is negative), so
``langneurons import njunlp`` has something realistic to read. Needs torch (the extract extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--languages", default="en,de,fr,zh,ru")
    parser.add_argument("--tag", default="demo")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--neurons", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    rng = np.random.default_rng(args.seed)
    languages = [x for x in args.languages.split(",") if x]
    shape = (args.layers, args.neurons)
    base_rate = rng.beta(2, 5, size=shape)
    args.out.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        rate = base_rate.copy()
        bound = rng.choice(rate.size, size=rate.size // 50, replace=False)
        rate.flat[bound] = rng.uniform(0.7, 0.95, size=bound.size)
        prompt_tokens = int(rng.integers(3_000, 6_000))
        response_tokens = int(rng.integers(8_000, 12_000))
        prompt = rng.binomial(prompt_tokens, base_rate)
        response = rng.binomial(response_tokens, rate)
        full = prompt + response
        # re-tokenisation at the prompt/response boundary: a few cells come out negative
        dip = rng.choice(full.size, size=5, replace=False)
        full.flat[dip] = np.maximum(prompt.flat[dip] - 1, 0)
        for name, total, over_zero in (
            (f"activation.{lang}.{args.tag}.pt", prompt_tokens + response_tokens, full),
            (f"prefix.activation.{lang}.{args.tag}.pt", prompt_tokens, prompt),
        ):
            torch.save(
                {"total_tokens": total, "over_zero": torch.from_numpy(over_zero.astype(np.int64))},
                args.out / name,
            )
    print(f"wrote {2 * len(languages)} files to {args.out}")


if __name__ == "__main__":
    main()
