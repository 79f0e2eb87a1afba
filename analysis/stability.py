"""Stability of an identification: a bootstrap over sequences that re-runs the whole rule.

Each replicate resamples the sequences of every language with replacement, rebuilds the
per-language counts from the per-sequence counts, and runs :func:`~.identify.identify` on them
with the same parameters as the point estimate (the automatic lambda is searched again in every
replicate). How often each neuron is selected, how often each (language, neuron) pair is in the
mask, how far each replicate's masks are from the full-data masks, and percentile intervals of
every count the identification reports, describe how much of an identification is sampling noise.

Memory does not grow with the number of replicates: replicates are processed ``block`` at a
time, and each block's counts are built by one streaming pass over ``seq_n_active`` in tiles
aligned to its chunks (or, when they fit in 512 MiB, from the role-summed counts the first pass
kept), and identified two at a time in threads. Every replicate draws from its own generator
(``SeedSequence(seed).spawn(n_boot)``), and the weighted counts are exact integers (float32
products while every sum stays below 2**24, float64 otherwise), so results depend neither on
``block`` nor on how the run is chunked or backed (numpy, dask, or a lazily read store).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr

from langneurons.analysis._resample import Cluster, Resampler, resampling_note
from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_dataset, check_int, check_open_unit
from langneurons.errors import NoValidLambdaError
from langneurons.names import LANGUAGE, LAYER, NEURON

from .bootstrap import identified_replicates
from .identify import identify, summary
from .params import IdentifyParams, Method, resolve_params
from .uncertainty import INDEPENDENT_SEQUENCES

log = logging.getLogger(__name__)

REPLICATE = "replicate"
#: Keyword arguments passed through to :func:`~.identify.identify` (deprecated: the fields of
#: :class:`~langneurons.analysis.params.IdentifyParams`, method excluded).
IDENTIFY_KWARGS: tuple[str, ...] = tuple(f for f in IdentifyParams.fields() if f != "method")
#: Identification attributes recorded with the result (the parameters of the rule).
_RULE_ATTRS: tuple[str, ...] = (
    "top_rate",
    "bar",
    "filter_rate",
    "lam_requested",
    "lam_range",
    "eps",
    "n_top",
)


class _Tally:
    """Per-replicate counts and running frequencies (sizes fixed by B and the run, not blocks)."""

    def __init__(self, full: xr.Dataset, n_boot: int, method: str) -> None:
        k = full.sizes[LANGUAGE]
        n_layers = full.sizes[LAYER]
        self.full_mask = np.asarray(full["mask"].transpose(LANGUAGE, LAYER, NEURON).values)
        self.full_size = self.full_mask.reshape(k, -1).sum(axis=1)
        self.ok = np.zeros(n_boot, dtype=np.bool_)
        self.selected = np.zeros(self.full_mask.shape[1:], dtype=np.int64)
        self.masked = np.zeros(self.full_mask.shape, dtype=np.int32)
        shapes: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
            "n_selected": ((), ()),
            "tau": ((), ()),
            "appear": (("m",), (k + 1,)),
            "specific": ((LANGUAGE,), (k,)),
            "related": ((LANGUAGE,), (k,)),
            "mask_size": ((LANGUAGE,), (k,)),
            "layer_specific": ((LAYER,), (n_layers,)),
            "layer_related": ((LAYER,), (n_layers,)),
            "layer_general": ((LAYER,), (n_layers,)),
            "layer_unassigned": ((LAYER,), (n_layers,)),
            "shared_by_n": (("n_shared",), (k + 1,)),
            "jaccard": ((LANGUAGE,), (k,)),
        }
        if method == "ternary":
            shapes["lambda"] = ((), ())
        self.dims = {name: dims for name, (dims, _) in shapes.items()}
        self.values = {
            name: np.full((n_boot, *shape), np.nan) for name, (_, shape) in shapes.items()
        }
        self.languages = _as_labels(full[LANGUAGE]).tolist()

    @staticmethod
    def counts(result: xr.Dataset, languages: list[str]) -> dict[str, Any]:
        """Every count an identification reports, as arrays keyed like the result variables."""
        attrs = result.attrs
        per_language = attrs["per_language"]
        out: dict[str, Any] = {
            "n_selected": attrs["n_selected"],
            "tau": attrs["tau"],
            "appear": attrs["appear"],
            "specific": [per_language[x]["specific"] for x in languages],
            "related": [per_language[x]["related"] for x in languages],
            "mask_size": [per_language[x]["mask"] for x in languages],
            "shared_by_n": attrs["shared_by_n"],
        }
        for kind in ("specific", "related", "general", "unassigned"):
            out[f"layer_{kind}"] = attrs["per_layer"][kind]
        if "lambda" in attrs:
            out["lambda"] = attrs["lambda"]
        return out

    def add(self, b: int, result: xr.Dataset) -> None:
        """Record replicate ``b``."""
        mask = np.asarray(result["mask"].transpose(LANGUAGE, LAYER, NEURON).values)
        self.ok[b] = True
        self.selected += np.asarray(result["selected"].transpose(LAYER, NEURON).values)
        self.masked += mask
        for name, value in self.counts(result, self.languages).items():
            if name in self.values:
                self.values[name][b] = value
        k = mask.shape[0]
        inter = np.count_nonzero((mask & self.full_mask).reshape(k, -1), axis=1)
        union = np.count_nonzero(mask.reshape(k, -1), axis=1) + self.full_size - inter
        self.values["jaccard"][b] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)


#: Why the stability intervals are descriptive (measured in docs/calibration.md).
STABILITY_REASON = (
    "percentile intervals of the rule's counts over resampled corpora show how stable the "
    "identification is; selection at a top rate biases them, so they are not confidence "
    "intervals for the counts on the population (they covered those 0.53-0.82 in the suite)"
)


def bootstrap_identification(
    run: xr.Dataset,
    method: Method | None = None,
    *,
    params: IdentifyParams | None = None,
    n_boot: int = 200,
    seed: int = 0,
    block: int | None = None,
    ci: float = 0.95,
    cluster: Cluster = "sequence",
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Bootstrap an identification over sequences, re-running the whole rule per replicate.

    Replicate :math:`b` resamples, independently in each language :math:`k`, its :math:`n_k`
    sequences with replacement: weights :math:`w_b \sim \mathrm{Multinomial}(n_k; 1/n_k, \dots)`
    and counts :math:`A^*_{b,k} = \sum_{i \in k} w_{bi}\, a_i`,
    :math:`T^*_{b,k} = \sum_{i \in k} w_{bi}\, t_i` for the chosen role. Then
    :func:`~.identify.identify` runs on :math:`(A^*_b, T^*_b)` with the same parameters as on
    the full data (the point estimate), automatic lambda included. With :math:`S_b` the
    selected set and :math:`M_{b,k}` language :math:`k`'s mask of replicate :math:`b`, and
    :math:`M_k` the full-data mask:

    - ``selection_frequency`` :math:`= \frac{1}{B} \sum_b 1[n \in S_b]`;
    - ``mask_frequency`` :math:`= \frac{1}{B} \sum_b 1[n \in M_{b,k}]`;
    - ``jaccard`` :math:`= |M_{b,k} \cap M_k| / |M_{b,k} \cup M_k|` (1 when both are empty);
    - every count the identification reports, per replicate, with its percentile interval
      (the :math:`(1 \mp ci)/2` quantiles over replicates).

    Parameters
    ----------
    run : xarray.Dataset
        A run with per-sequence counts (numpy- or dask-backed, or opened lazily from a store;
        identical results).
    method : {"ternary", "lape"}, optional
        The identification rule (default: ``params.method``).
    n_boot : int >= 2
        Number of replicates :math:`B`.
    seed : int >= 0
        Replicate :math:`b` draws from ``numpy.random.default_rng(SeedSequence(seed).spawn(
        n_boot)[b])``, so results do not depend on ``block``.
    block : int >= 1 or None
        Replicates whose counts are held at once (memory ~ ``block * K * L * N * 4`` bytes);
        each block is one pass over ``seq_n_active``. None: as many as fit in 256 MiB. Does
        not change the result.
    ci : float in (0, 1)
        Level of the percentile intervals.
    params : IdentifyParams, optional
        The identification's parameters (``role``, ``top_rate``, ``bar``, ``lam``, ...), for
        the point estimate and every replicate; default ``IdentifyParams()``.
    cluster : {"sequence", "item"}
        What a replicate draws: sequences within each language (default), or items (every
        sequence of a ``seq_id``, in all languages at once).
    **identify_kwargs
        Deprecated: the loose identification keywords (use ``params=``).

    Returns
    -------
    xarray.Dataset
        ``selection_frequency[layer, neuron]``, ``mask_frequency[language, layer, neuron]``,
        ``jaccard[replicate, language]`` and ``jaccard_mean[language]``; ``ok[replicate]``
        (False where the replicate's rule failed, e.g. no valid lambda, or a language drew
        no tokens; failed replicates are NaN and left out of every frequency and interval);
        per replicate ``n_selected``, ``tau``, ``lambda`` (ternary), ``appear[m]`` (m =
        0..K), ``specific``, ``related``, ``mask_size`` ``[language]``, ``layer_specific``,
        ``layer_related``, ``layer_general``, ``layer_unassigned`` ``[layer]`` and
        ``shared_by_n[n_shared]`` (0..K), each with ``*_lower`` and ``*_upper`` (percentile
        interval) and ``*_estimate`` (the full-data value). ``attrs``: the rule's parameters,
        ``method``, ``role``, ``n_boot``, ``seed``, ``ci``, ``n_ok``, ``n_failed``,
        ``resampling``, ``assumption``, ``n_sequences`` per language, ``languages`` and
        ``estimate`` (:func:`~.identify.summary` of the full-data identification). Computes.

    Raises
    ------
    ParameterError
        A parameter is out of range or unknown; the run has no per-sequence counts (extract
        with ``--per-sequence``) or a language has fewer than 2 sequences.
    StoreValidationError
        The run breaks the schema, or its per-sequence counts disagree with ``n_tokens`` or
        ``n_active``.
    NoValidLambdaError
        The full-data identification has no valid lambda, or no replicate has one.

    References
    ----------
    Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13 (percentile
    intervals). Davison & Hinkley (1997), *Bootstrap Methods and their Application*,
    sec. 3.8 (clustered and stratified resampling). Meinshausen & Buehlmann (2010),
    "Stability selection", JRSS B 72 (selection frequencies).
    """
    params_ = resolve_params(
        params, identify_kwargs, method=method, where="bootstrap_identification"
    )
    n_boot_ = check_int("n_boot", n_boot, 2)
    seed_ = check_int("seed", seed, 0)
    block_ = None if block is None else check_int("block", block, 1)
    ci_ = check_open_unit("ci", ci)
    run = check_dataset(run, "run")
    sampler = Resampler(run, params_.role, "bootstrap_identification", fix=_FIX, cluster=cluster)
    full = identify(run, params_.method, **params_.keywords())
    d = sampler.design
    tally = _Tally(full, n_boot_, params_.method)
    coords = {LANGUAGE: d.languages, LAYER: run[LAYER].values, NEURON: run[NEURON].values}
    failures: dict[str, int] = {}
    for b, _, result in identified_replicates(
        [sampler], params_, seed_, n_boot_, block=block_, label="bootstrap identification"
    ):
        if isinstance(result, str):
            failures[result] = failures.get(result, 0) + 1
        else:
            tally.add(b, result)
    n_ok = int(tally.ok.sum())
    if n_ok == 0:
        raise NoValidLambdaError(
            f"all {n_boot_} bootstrap replicates failed ({failures}); widen lam_range "
            "(--lambda-range) or lower top_rate (--top-rate)"
        )
    if failures:
        log.warning("bootstrap_identification: %d replicates failed: %s", n_boot_ - n_ok, failures)
    return _assemble(full, tally, sampler, coords, n_boot_, seed_, ci_, params_, failures)


_FIX = "extract with --per-sequence (per-sequence counts make the sequence the sampled unit)"


def _assemble(
    full: xr.Dataset,
    tally: _Tally,
    sampler: Resampler,
    coords: dict[str, Any],
    n_boot: int,
    seed: int,
    ci: float,
    params: IdentifyParams,
    failures: dict[str, int],
) -> xr.Dataset:
    """The result Dataset: frequencies, per-replicate counts, intervals and attributes."""
    design = sampler.design
    k_lang = len(design.languages)
    ok = tally.ok
    n_ok = int(ok.sum())
    levels = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]
    estimate = _Tally.counts(full, design.languages)
    data: dict[str, Any] = {
        "selection_frequency": ((LAYER, NEURON), tally.selected / n_ok),
        "mask_frequency": ((LANGUAGE, LAYER, NEURON), tally.masked / n_ok),
        "ok": ((REPLICATE,), ok.copy()),
    }
    for name, values in tally.values.items():
        dims = tally.dims[name]
        data[name] = ((REPLICATE, *dims), values)
        low, high = np.quantile(values[ok], levels, axis=0)
        data[f"{name}_lower"] = (dims, low)
        data[f"{name}_upper"] = (dims, high)
        if name in estimate:
            data[f"{name}_estimate"] = (dims, np.asarray(estimate[name], dtype=np.float64))
    data["jaccard_mean"] = ((LANGUAGE,), tally.values["jaccard"][ok].mean(axis=0))
    attrs: dict[str, Any] = {"method": params.method, "role": params.role}
    attrs.update({key: full.attrs[key] for key in _RULE_ATTRS if key in full.attrs})
    attrs.update(
        {
            "n_boot": n_boot,
            "seed": seed,
            "ci": ci,
            "interval": "percentile",
            # what the intervals are: the spread of the rule over resampled corpora; they are
            # not confidence intervals for the counts the rule gives on the population
            "inference": "descriptive",
            "inference_reason": STABILITY_REASON,
            "n_ok": n_ok,
            "n_failed": n_boot - n_ok,
            "failures": {str(k): int(v) for k, v in failures.items()},
            "resampling": resampling_note(sampler.units.cluster),
            "cluster": sampler.units.cluster,
            "identify_params": params.to_attrs(),
            "assumption": INDEPENDENT_SEQUENCES,
            "n_sequences": design.n_per_language(),
            "languages": list(design.languages),
            "estimate": summary(full),
        }
    )
    out_coords = {
        **coords,
        REPLICATE: np.arange(n_boot),
        "m": np.arange(k_lang + 1),
        "n_shared": np.arange(k_lang + 1),
    }
    return xr.Dataset(data, coords=out_coords, attrs=attrs)


__all__ = ["bootstrap_identification", "IDENTIFY_KWARGS"]
