"""Re-running an identification on bootstrap replicates of one or two runs.

The replicates come from the one resampling engine, :mod:`~langneurons.analysis._resample`
(its design, random stream and policy on inconsistent totals); this module identifies each of
them with the same :class:`~langneurons.analysis.params.IdentifyParams` as the point estimate
and collects a statistic of every replicate, for :mod:`~langneurons.analysis.stability`,
:mod:`~langneurons.analysis.stages`, :mod:`~langneurons.analysis.distributions` and
:mod:`~langneurons.analysis.alignment`.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons._progress import progress
from langneurons.analysis._resample import (
    CLUSTERS,
    Resampler,
    draw_swaps,
    draw_weights,
    exact_dtype,
    replicate_seeds,
    resampling_note,
)
from langneurons.analysis._validate import check_choice
from langneurons.errors import NoValidLambdaError, ParameterError

from .identify import identify
from .params import IdentifyParams

log = logging.getLogger(__name__)

BLOCK_BYTES = 256 << 20  # replicate counts held at once when block=None
#: Replicates identified side by side (threads: numpy releases the GIL).
THREADS = max(1, min(2, os.cpu_count() or 1))


#: Why a replicate has no identification.
NO_TOKENS, NO_LAMBDA = "no tokens", "no valid lambda"


def identified_replicates(
    samplers: Sequence[Resampler],
    params: IdentifyParams | Sequence[IdentifyParams],
    seed: int,
    n_boot: int,
    *,
    paired: bool = False,
    block: int | None = None,
    label: str = "bootstrap",
) -> Iterator[tuple[int, int, xr.Dataset | str]]:
    """``(replicate, run, identify(replicate) or why it failed)`` for every replicate and run.

    Replicates are built ``block`` at a time (default: as many as fit in ``BLOCK_BYTES``), each
    block in one pass over every run's ``seq_n_active`` (later blocks reuse the role-summed
    counts kept in memory when they fit in ``_resample.CACHE_BYTES``); the first block also
    sums every sequence once, to check the counts against ``n_active``. Replicates are
    identified ``THREADS`` at a time and yielded in order. Identification re-runs with
    ``params`` (role: the replicate's summed roles) on every replicate; one with a language
    that drew no tokens, or (automatic lambda) with no valid lambda, yields the reason.
    ``params`` may be one set for every run or one per run (models identified each with its own).
    """
    if paired and len(samplers) > 1:
        plans = [samplers[0].units] + [
            s.units.onto(samplers[0].units, (samplers[0].design.name, s.design.name))
            for s in samplers[1:]
        ]
    else:
        plans = [s.units for s in samplers]
    cells = sum(len(s.design.languages) * s.n_cells for s in samplers)
    if block is None:
        block = int(max(1, min(max(n_boot, 1), BLOCK_BYTES // max(1, cells * 4))))
    seeds = replicate_seeds(seed, n_boot)
    per_run = [params] * len(samplers) if isinstance(params, IdentifyParams) else list(params)
    if len(per_run) != len(samplers):
        raise ParameterError(f"got {len(per_run)} parameter sets for {len(samplers)} runs")
    rules = [p.replace(role="response") for p in per_run]
    checked = False
    with progress(label, total=n_boot * len(samplers), unit="replicate") as task:
        for b0 in range(0, n_boot, block):
            b1 = min(b0 + block, n_boot)
            weights = draw_weights(plans, seeds[b0:b1], paired=paired)
            for r, (sampler, w) in enumerate(zip(samplers, weights, strict=True)):
                if not checked:  # one more row: every used sequence once
                    w = np.vstack([(sampler.design.language_of >= 0).astype(np.int64), w])
                tokens = sampler.replicate_tokens(w)
                dtype = exact_dtype(int(tokens.max(initial=0)))
                counts = sampler.replicate_counts(w, dtype)
                if not checked:
                    sampler.check_active(counts[0])
                    tokens, counts = tokens[1:], counts[1:]
                jobs = [(sampler, counts[j], tokens[j], rules[r]) for j in range(b1 - b0)]
                for j, result in enumerate(_in_threads(_identify_one, jobs)):
                    task.update()
                    yield b0 + j, r, result
                del counts, jobs
            checked = True


def _identify_one(
    sampler: Resampler, counts: NDArray[Any], tokens: NDArray[np.int64], rule: IdentifyParams
) -> xr.Dataset | str:
    """``identify`` of one replicate, or why it has none."""
    if not (tokens > 0).all():
        return NO_TOKENS
    try:
        return identify(sampler.replicate(counts, tokens), **_kw(rule))
    except NoValidLambdaError:
        return NO_LAMBDA


def _in_threads(func: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    """``func(*job)`` of every job, in order, ``THREADS`` at a time.

    Identification is numpy work that releases the GIL for most of its time, so replicates
    run side by side on the cores; at most ``THREADS`` are in flight (memory stays bounded),
    and each result is the one a serial call gives (every replicate's counts are fixed before
    it runs).
    """
    if THREADS <= 1 or len(jobs) <= 1:
        yield from (func(*job) for job in jobs)
        return
    with ThreadPoolExecutor(THREADS, thread_name_prefix="replicate") as pool:
        pending: deque[Future[Any]] = deque()
        for job in jobs:
            pending.append(pool.submit(func, *job))
            if len(pending) >= THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _kw(params: IdentifyParams) -> dict[str, Any]:
    """``identify`` keywords of ``params``, the method included."""
    return {"method": params.method, **params.keywords()}


def bootstrap_statistic(
    samplers: Sequence[Resampler],
    params: IdentifyParams,
    seed: int,
    n_boot: int,
    statistic: Any,
    shape: tuple[int, ...],
    *,
    paired: bool = False,
) -> list[tuple[NDArray[np.float64], int]]:
    """``statistic(identify(replicate))`` ``[n_boot, *shape]`` per run, NaN where a replicate
    failed, with each run's number of failed replicates.

    Raises NoValidLambdaError when every replicate of a run failed.
    """
    out = [np.full((n_boot, *shape), np.nan) for _ in samplers]
    failed = [0] * len(samplers)
    if n_boot == 0 or not samplers:
        return [(o, 0) for o in out]
    label = f"bootstrap {' and '.join(s.design.name for s in samplers)}"
    for b, r, result in identified_replicates(
        samplers, params, seed, n_boot, paired=paired, label=label
    ):
        if isinstance(result, str):
            failed[r] += 1
        else:
            out[r][b] = statistic(result)
    for sampler, n_failed in zip(samplers, failed, strict=True):
        name = sampler.design.name
        if n_failed:
            log.info("%s: %d of %d bootstrap replicates failed", name, n_failed, n_boot)
        if n_failed == n_boot:
            raise NoValidLambdaError(
                f"identification found no valid lambda in any of the {n_boot} bootstrap "
                f"replicates of {name}; widen lam_range or lower top_rate"
            )
    return list(zip(out, failed, strict=True))


def bootstrap_runs(
    runs: Sequence[tuple[xr.Dataset, str]],
    params: IdentifyParams,
    seed: int,
    n_boot: int,
    statistic: Any,
    shape: tuple[int, ...],
    *,
    what: str,
    cluster: str = "sequence",
    paired: bool = False,
) -> list[tuple[NDArray[np.float64], int]]:
    """:func:`bootstrap_statistic` of named runs (none read when ``n_boot`` is 0)."""
    check_choice("cluster", cluster, CLUSTERS)
    if n_boot == 0:
        return [(np.full((0, *shape), np.nan), 0) for _ in runs]
    samplers = [
        Resampler(run, params.role, what, name=name, minimum=1, cluster=cluster)
        for run, name in runs
    ]
    return bootstrap_statistic(samplers, params, seed, n_boot, statistic, shape, paired=paired)


def swap_statistic(
    samplers: Sequence[Resampler],
    params: IdentifyParams,
    seed: int,
    n_perm: int,
    statistic: Any,
    shape: tuple[int, ...],
    *,
    pair_statistic: Any = None,
) -> tuple[NDArray[np.float64], int]:
    """``statistic(second) - statistic(first)`` of ``n_perm`` label-swapped pseudo-run pairs
    (``pair_statistic(first, second)`` instead, when given: a statistic of the pair itself).

    Two paired runs (the same units): in permutation ``p`` each unit's sequences are swapped
    between the runs with probability 1/2 (:func:`~langneurons.analysis._resample.draw_swaps`,
    from ``SeedSequence(seed).spawn(n_perm)[p]``), and both pseudo-runs are identified with
    ``params``, as the real runs were. Under the null that the runs are exchangeable unit by
    unit, the real difference is one draw of this distribution. Returns ``[n_perm, *shape]``
    (NaN where a pseudo-run had no valid lambda) and the number of such failures.
    """
    first, second = samplers
    if list(first.design.languages) != list(second.design.languages):
        raise ParameterError(
            f"{first.design.name} and {second.design.name} list their languages differently "
            f"({first.design.languages} vs {second.design.languages}); a label swap needs the same"
        )
    plans = [first.units, second.units.onto(first.units, (first.design.name, second.design.name))]
    out = np.full((n_perm, *shape), np.nan)
    if n_perm == 0:
        return out, 0
    ones = [(s.design.language_of >= 0).astype(np.int64)[None, :] for s in samplers]
    tokens_all = sum(s.replicate_tokens(w) for s, w in zip(samplers, ones, strict=True))[0]
    dtype = exact_dtype(int(tokens_all.max(initial=0)))
    counts_all = [s.replicate_counts(w, dtype)[0] for s, w in zip(samplers, ones, strict=True)]
    for sampler, counts in zip(samplers, counts_all, strict=True):
        sampler.check_active(counts)
    total = counts_all[0] + counts_all[1]
    cells = len(first.design.languages) * first.n_cells
    block = int(max(1, min(n_perm, BLOCK_BYTES // max(1, cells * 8))))
    seeds = replicate_seeds(seed, n_perm)
    rule = params.replace(role="response")
    failed = 0
    label = f"label swaps of {first.design.name} and {second.design.name}"
    with progress(label, total=n_perm, unit="permutation") as task:
        for b0 in range(0, n_perm, block):
            w_first, w_second = draw_swaps(plans, seeds[b0 : b0 + block])
            tokens = first.replicate_tokens(w_first) + second.replicate_tokens(w_second)
            counts = first.replicate_counts(w_first, dtype)
            counts += second.replicate_counts(w_second, dtype)
            for j in range(counts.shape[0]):
                task.update()
                pair = (
                    first.replicate(counts[j], tokens[j]),
                    first.replicate(total - counts[j], tokens_all - tokens[j]),
                )
                if not all((p["n_tokens"].values > 0).all() for p in pair):
                    failed += 1
                    continue
                try:
                    ra, rb = (identify(p, **_kw(rule)) for p in pair)
                except NoValidLambdaError:
                    failed += 1
                    continue
                if pair_statistic is not None:
                    out[b0 + j] = pair_statistic(ra, rb)
                else:
                    out[b0 + j] = statistic(rb) - statistic(ra)
            del counts
    if failed == n_perm:
        raise NoValidLambdaError(
            f"identification found no valid lambda in any of the {n_perm} label-swapped "
            f"pseudo-runs of {first.design.name} and {second.design.name}; widen lam_range or "
            "lower top_rate"
        )
    return out, failed


def swap_pvalue(null: NDArray[np.float64], observed: NDArray[Any]) -> NDArray[np.float64]:
    """Two-sided permutation p ``(1 + #{|T*| >= |T|}) / (1 + P)`` over the finite draws."""
    finite = np.isfinite(null)
    n = finite.sum(axis=0)
    hits = (np.where(finite, np.abs(null), -np.inf) >= np.abs(observed) - 1e-9).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (1.0 + hits) / (1.0 + n), np.nan)


def identification_attrs(result: xr.Dataset, prefix: str) -> dict[str, Any]:
    """tau and lambda of one identification, keyed with a prefix (lambda omitted for LAPE)."""
    out: dict[str, Any] = {f"{prefix}_tau": float(result.attrs["tau"])}
    if "lambda" in result.attrs:
        out[f"{prefix}_lambda"] = float(result.attrs["lambda"])
    return out


def bootstrap_attrs(
    params: IdentifyParams, n_boot: int, seed: int, ci: float, cluster: str, paired: bool
) -> dict[str, Any]:
    """Parameters every bootstrap of an identification records."""
    return {
        "method": params.method,
        "identify_params": params.to_attrs(),
        "n_boot": n_boot,
        "seed": seed,
        "ci": ci,
        "interval": "percentile",
        "cluster": cluster,
        "paired": paired,
        "resampling": resampling_note(cluster, paired) + "; identify() re-run on every replicate",
    }


__all__ = [
    "NO_TOKENS",
    "NO_LAMBDA",
    "identified_replicates",
    "bootstrap_statistic",
    "bootstrap_runs",
    "swap_statistic",
    "swap_pvalue",
    "identification_attrs",
    "bootstrap_attrs",
]
