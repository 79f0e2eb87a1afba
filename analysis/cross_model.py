"""Models of different depth, width and language sets, side by side.

Every comparison elsewhere in the analysis room pairs neurons of one architecture. Here each model
is reduced to quantities that do not depend on its shape, and those are compared:

- **shares** of neuron types (specific / related / general / unassigned) as a fraction of all
  the model's neurons and of its selected set; per-language mask sizes as a fraction of its
  neurons; the shared-by-N histogram of its masks over the common languages, as fractions;
- **layer profiles on relative depth** ``r = layer / (L - 1)`` binned on one grid for every
  model, each bin's share of neurons of each type;
- **language similarity**: the Jaccard matrix of each model's masks over the common languages,
  and the agreement of two models' matrices by a Mantel permutation test (languages permuted
  jointly in rows and columns).

Intervals come from the one resampling engine (:mod:`~langneurons.analysis._resample`, through
:func:`~langneurons.analysis.bootstrap.identified_replicates`): items (``seq_id``) are resampled
and every model is identified again on each replicate with its own parameters. Models that read
the same items (the same corpus through different tokenizers) are drawn together, by ``seq_id``
and never by token, so between-model differences get paired intervals.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._resample import Resampler, design, has_sequences, seq_tokens
from langneurons.analysis._validate import (
    as_labels,
    check_dataset,
    check_int,
    check_n_boot,
    check_open_unit,
    require_result,
)
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, NEURON, SEQ_ID, TYPES

from .bootstrap import identified_replicates
from .identify import params_of
from .params import IdentifyParams
from .stages import segment_stages, stage_profile
from .type_tables import mask_rows, type_table

log = logging.getLogger(__name__)

MODEL, TYPE, DEPTH, OTHER, PAIR, N_SHARED, BOUNDARY = (
    "model",
    "type",
    "depth_bin",
    "other_language",
    "pair",
    "n_shared",
    "boundary",
)

#: Why item-bootstrap intervals of the shares are descriptive (measured by the calibration
#: family ``models`` in docs/calibration.md).
SHARES_REASON = (
    "percentile intervals over resampled items re-run each model's rule; selection at a top "
    "rate biases them (as for bootstrap_identification), so they show how stable each share is "
    "rather than covering the population share"
)
NO_SEQUENCES_REASON = (
    "a model has no per-sequence counts, so nothing can be resampled: shares and profiles are "
    "point values (extract with --per-sequence for intervals)"
)


# --------------------------------------------------------------------------- per model


def depth_edges(bins: int) -> NDArray[np.float64]:
    """Edges of ``bins`` equal bins of relative depth on [0, 1]."""
    return np.linspace(0.0, 1.0, bins + 1)


def depth_bin_of(n_layers: int, bins: int) -> NDArray[np.intp]:
    """The bin of each layer's relative depth ``i / (L - 1)`` (the last edge closed)."""
    rel = np.arange(n_layers) / max(n_layers - 1, 1)
    return np.minimum((rel * bins).astype(np.intp), bins - 1)


def model_statistics(
    result: xr.Dataset, languages: Sequence[str], bins: int, n_stages: int = 0
) -> dict[str, NDArray[np.float64]]:
    """Every shape-free quantity of one identification (types read through type_table)."""
    counts = np.asarray(type_table(result, types=TYPES).transpose(LAYER, "type").values, float)
    n_layers, n_neurons = result.sizes[LAYER], result.sizes[NEURON]
    total = n_layers * n_neurons
    selected = np.asarray(result["selected"].transpose(LAYER, NEURON).values, bool)
    general = np.asarray(result["general"].transpose(LAYER, NEURON).values, bool)
    n_selected = max(int(selected.sum()), 1)
    of_selected = counts.sum(axis=0)
    of_selected[TYPES.index("general")] = float((general & selected).sum())
    masks = mask_rows(result, languages)
    shared = masks.sum(axis=0)
    per_bin = np.zeros((bins, len(TYPES)))
    neurons_in_bin = np.zeros(bins)
    where = depth_bin_of(n_layers, bins)
    np.add.at(per_bin, where, counts)
    np.add.at(neurons_in_bin, where, n_neurons)
    out = {
        "type_share": counts.sum(axis=0) / total,
        "type_share_selected": of_selected / n_selected,
        "mask_share": masks.sum(axis=1) / total,
        "shared_by_n": np.bincount(shared, minlength=len(languages) + 1) / total,
        "layer_share": per_bin / np.maximum(neurons_in_bin, 1)[:, None],
        "jaccard": jaccard_matrix(masks),
    }
    if n_stages > 1:
        starts = segment_stages(stage_profile(result), n_stages)["start_index"].values[1:]
        out["stage_start"] = np.asarray(starts, dtype=np.float64) / max(n_layers - 1, 1)
    return out


def jaccard_matrix(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """``|M_k & M_l| / |M_k | M_l|`` of mask rows ``[language, neuron]``.

    Two empty masks share no neuron: 0 off the diagonal (the diagonal is 1 by definition).
    """
    m = masks.astype(np.float64)
    inter = m @ m.T
    sizes = m.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    out = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(out, 1.0)
    return out


# --------------------------------------------------------------------------- Mantel


def mantel(
    a: NDArray[np.float64], b: NDArray[np.float64], n_perm: int, seed: int
) -> tuple[float, float, float, bool]:
    """Mantel test of two ``K x K`` symmetric matrices: ``(r, p, smallest p, exact)``.

    ``r`` is Pearson's correlation of the off-diagonal upper triangles; the null permutes the
    languages of ``b`` jointly in rows and columns. With ``K! <= n_perm`` every permutation is
    enumerated (exact, ``p = #{r* >= r} / K!``), else ``n_perm`` random ones
    (``p = (1 + #{r* >= r}) / (1 + n_perm)``). One-sided: agreement of the structures.
    """
    k = a.shape[0]
    iu = np.triu_indices(k, 1)
    x = a[iu]
    if k < 3 or np.ptp(x) == 0 or np.ptp(b[iu]) == 0:
        return math.nan, math.nan, math.nan, False

    def corr(perm: Sequence[int] | NDArray[np.intp]) -> float:
        idx = np.asarray(perm, dtype=np.intp)
        y = b[np.ix_(idx, idx)][iu]
        return float(np.corrcoef(x, y)[0, 1])

    observed = corr(np.arange(k))
    exact = math.factorial(k) <= n_perm
    if exact:
        null = np.array([corr(p) for p in itertools.permutations(range(k))])
        p = float((null >= observed - 1e-12).sum()) / null.size
        return observed, p, 1.0 / math.factorial(k), True
    rng = np.random.default_rng(seed)
    null = np.array([corr(rng.permutation(k)) for _ in range(n_perm)])
    p = (1.0 + float((null >= observed - 1e-12).sum())) / (1.0 + n_perm)
    return observed, p, max(1.0 / math.factorial(k), 1.0 / (1.0 + n_perm)), False


# --------------------------------------------------------------------------- inputs


def common_languages(datasets: Sequence[xr.Dataset], names: Sequence[str]) -> list[str]:
    """Languages of the first run or result that every one has (ParameterError when none)."""
    sets = [as_labels(r[LANGUAGE]).tolist() for r in datasets]
    common = [x for x in sets[0] if all(x in s for s in sets[1:])]
    if not common:
        listed = "; ".join(f"{n}: {', '.join(s)}" for n, s in zip(names, sets, strict=True))
        raise ParameterError(
            f"the models have no language in common ({listed}); compare models identified on "
            "at least one shared language"
        )
    return common


def check_params(
    params: Sequence[IdentifyParams], names: Sequence[str], allow_mixed: bool
) -> list[str]:
    """The ways the models' identifications differ; ParameterError unless ``allow_mixed``."""
    records = [p.to_attrs() for p in params]
    differ = sorted({k for r in records for k in r if any(r[k] != records[0][k] for r in records)})
    if differ and not allow_mixed:
        shown = "; ".join(
            f"{n}: " + ", ".join(f"{k}={r[k]}" for k in differ)
            for n, r in zip(names, records, strict=True)
        )
        raise ParameterError(
            f"the models were identified with different methods or parameters ({shown}); "
            "identify them with one common set, or say so with allow_mixed=True (--allow-mixed)"
        )
    return differ


def check_bins(bins: object, layers: Sequence[int], names: Sequence[str]) -> int:
    """``bins`` >= 1 and no finer than the shallowest model's layers."""
    b = check_int("bins", bins, 1)
    shallow = int(np.argmin(layers))
    if b > layers[shallow]:
        raise ParameterError(
            f"bins={b} is finer than the shallowest model ({names[shallow]!r} has "
            f"{layers[shallow]} layers): some bins would hold no layer; use bins <= "
            f"{layers[shallow]}"
        )
    return b


def _item_tokens(
    runs: Sequence[xr.Dataset], params: Sequence[IdentifyParams], languages: Sequence[str]
) -> tuple[list[str], NDArray[np.float64]] | None:
    """Token totals ``[model, item]`` over the common languages, for items every model has."""
    per_model: list[dict[str, float]] = []
    for run, p in zip(runs, params, strict=True):
        if SEQ_ID not in run.variables:
            return None
        sub = run.sel({LANGUAGE: list(languages)})
        d = design(sub, p.role, "compare_models", minimum=1)
        tokens = seq_tokens(sub, d)
        ids = as_labels(sub[SEQ_ID])
        totals: dict[str, float] = {}
        for members in d.members:
            for i in members:
                totals[str(ids[i])] = totals.get(str(ids[i]), 0.0) + float(tokens[i])
        per_model.append(totals)
    items = sorted(set.intersection(*(set(t) for t in per_model)))
    if not items:
        return None
    return items, np.array([[t[i] for i in items] for t in per_model])


# --------------------------------------------------------------------------- the comparison


_VARS: dict[str, tuple[str, ...]] = {
    "type_share": (TYPE,),
    "type_share_selected": (TYPE,),
    "mask_share": (LANGUAGE,),
    "shared_by_n": (N_SHARED,),
    "layer_share": (DEPTH, TYPE),
    "stage_start": (BOUNDARY,),
}
#: Quantities with a between-model difference (interval and bootstrap p) against the first.
_DIFFERENCES: tuple[str, ...] = ("type_share", "type_share_selected", "mask_share")


def compare_models(
    runs: Sequence[xr.Dataset | None] | None,
    results: Sequence[xr.Dataset],
    *,
    names: Sequence[str] | None = None,
    bins: int = 5,
    n_stages: int = 4,
    n_boot: int = 200,
    n_perm: int = 9999,
    seed: int = 0,
    ci: float = 0.95,
    alpha: float = 0.05,
    allow_mixed: bool = False,
) -> xr.Dataset:
    r"""Compare identifications of models of different depth, width and language sets.

    With model :math:`m` of :math:`L_m` layers of :math:`N_m` neurons, its identification's
    type counts :math:`c_{m,t}` and selected set :math:`S_m`, and the common languages
    :math:`K` (the languages every model has, in the first model's order):

    - ``type_share`` :math:`= c_{m,t} / (L_m N_m)`; ``type_share_selected``
      :math:`= |\{n \in S_m: \mathrm{type}(n) = t\}| / |S_m|` (general: the general neurons
      that are selected);
    - ``mask_share`` :math:`= |M_{m,k}| / (L_m N_m)` for each common language;
    - ``shared_by_n`` :math:`[j] =` the fraction of the model's neurons in exactly :math:`j`
      of the common languages' masks;
    - ``layer_share`` :math:`[b, t]`: layers at relative depth :math:`\ell / (L_m - 1)` in bin
      :math:`b` of ``bins`` equal bins of :math:`[0, 1]`; the fraction of their neurons of
      type :math:`t`;
    - ``jaccard`` :math:`[k, l] = |M_{m,k} \cap M_{m,l}| / |M_{m,k} \cup M_{m,l}|` (0 for two
      empty masks), and for every
      pair of models the Mantel correlation of their matrices' off-diagonal entries with a
      permutation p-value (languages permuted jointly; with :math:`K` languages the smallest
      attainable p is :math:`1/K!`, so the test is labelled descriptive when that exceeds
      ``alpha``, e.g. for :math:`K \le 3`).

    Types are each model's own identification (over its own languages), read through
    :func:`~langneurons.analysis.type_table`; masks, shared-by-N and Jaccard use the common
    languages only.

    With per-sequence counts for every model, ``n_boot`` replicates resample items (``seq_id``;
    sequences without item ids: sequences within language) and identify every model again with
    the parameters of its result; models that hold the same items are drawn together (paired
    by ``seq_id``, not by token), so the differences from the first model
    (``*_difference``) have paired percentile intervals and a bootstrap p
    :math:`\min(1, 2 (1 + \min(\#\{d^* \le 0\}, \#\{d^* \ge 0\})) / (1 + B))`.

    Parameters
    ----------
    runs : sequence of xarray.Dataset or None
        Each model's run (for per-sequence counts and token totals); None, or a None entry, for
        point values only (labelled descriptive).
    results : sequence of xarray.Dataset
        Each model's identification (:func:`~langneurons.analysis.identify`), at least two.
    names : sequence of str, optional
        Model names (default ``model0``, ``model1``, ...).
    bins : int >= 1
        Relative-depth bins; at most the shallowest model's layer count.
    n_stages : int >= 0
        Stages of each model's layer profile (:func:`~langneurons.analysis.segment_stages` of
        :func:`~langneurons.analysis.stage_profile`, exact least squares); their boundaries
        are reported in relative depth, with intervals from the same replicates. 0: none; at
        most the shallowest model's layer count.
    n_boot : int >= 0
        Item-bootstrap replicates (0: no intervals).
    n_perm : int >= 1
        Mantel permutations (all :math:`K!` when that is no more).
    seed : int >= 0
        Seed of the bootstrap (``SeedSequence(seed).spawn(n_boot)``) and of the Mantel draws.
    ci, alpha : float in (0, 1)
        Interval level; level at which a Mantel test's floor makes it descriptive.
    allow_mixed : bool
        Compare identifications made with different methods or parameters (refused otherwise);
        the differing parameters are recorded in ``attrs["mixed_parameters"]``.

    Returns
    -------
    xarray.Dataset
        Per model: ``n_layers``, ``n_neurons`` (per layer), ``n_selected``, ``type_share``,
        ``type_share_selected`` ``[model, type]``, ``mask_share[model, language]``,
        ``shared_by_n[model, n_shared]``, ``layer_share[model, depth_bin, type]`` (with
        ``depth_lower``/``depth_upper`` coordinates), ``stage_start[model, boundary]`` (the
        relative depth where stage 2, 3, ... begins), ``jaccard[model, language,
        other_language]``; each share with ``*_lower``/``*_upper`` when bootstrapped, and
        ``*_difference`` (model minus the first) with ``_lower``, ``_upper``, ``_pvalue``.
        Per pair of models: ``mantel_r``, ``mantel_pvalue``, ``mantel_min_pvalue``.
        Token totals: ``tokens_per_item[model]`` (mean over the common items) and
        ``token_ratio[model]`` (median over items of the model's tokens over the first
        model's). ``attrs``: ``languages`` (common), ``languages_by_model``, ``inference`` and
        ``inference_reason``, ``mantel_inference``, ``paired``, ``cluster``, ``headline``.

    Raises
    ------
    ParameterError
        Fewer than two models; no language in common; ``bins`` finer than the shallowest model;
        identifications made with different methods or parameters without ``allow_mixed``.

    References
    ----------
    Mantel (1967), "The detection of disease clustering and a generalized regression
    approach", Cancer Research 27; Jaccard (1912); Tang et al. (2024), ACL (language-specific
    neurons); Davison & Hinkley (1997), sec. 3.8 (clustered resampling).
    """
    if isinstance(results, xr.Dataset) or not isinstance(results, Sequence) or len(results) < 2:
        raise ParameterError(
            "compare_models needs a sequence of at least two identification results"
        )
    k_models = len(results)
    names_ = [f"model{i}" for i in range(k_models)] if names is None else [str(n) for n in names]
    if len(names_) != k_models or len(set(names_)) != k_models:
        raise ParameterError(f"names must be {k_models} distinct names, got {list(names_)}")
    needed = ("selected", "mask", "neuron_type", "general")
    loaded = [
        require_result(r, f"results[{i}]", needed)[list(needed)].compute().assign_attrs(r.attrs)
        for i, r in enumerate(results)
    ]
    runs_: list[xr.Dataset | None] = [None] * k_models if runs is None else list(runs)
    if len(runs_) != k_models:
        raise ParameterError(f"got {len(runs_)} runs for {k_models} results; give one per model")
    for i, run in enumerate(runs_):
        if run is None:
            continue
        run = check_dataset(run, f"runs[{i}]", "an xarray.Dataset (a run)")
        if (run.sizes.get(LAYER), run.sizes.get(NEURON)) != (
            loaded[i].sizes[LAYER],
            loaded[i].sizes[NEURON],
        ):
            raise ParameterError(
                f"runs[{i}] ({names_[i]}) has {run.sizes.get(LAYER)} x {run.sizes.get(NEURON)} "
                f"neurons but its result has {loaded[i].sizes[LAYER]} x "
                f"{loaded[i].sizes[NEURON]}; pass each model's own run and result"
            )
    n_boot_ = check_n_boot(n_boot)
    n_perm_ = check_int("n_perm", n_perm, 1)
    seed_ = check_int("seed", seed, 0)
    ci_ = check_open_unit("ci", ci)
    alpha_ = check_open_unit("alpha", alpha)
    params = [params_of(r) for r in loaded]
    mixed = check_params(params, names_, allow_mixed)
    layers = [int(r.sizes[LAYER]) for r in loaded]
    bins_ = check_bins(bins, layers, names_)
    languages = common_languages(loaded, names_)
    k = len(languages)
    stages_ = check_int("n_stages", n_stages, 0)
    if stages_ > min(layers):
        shallow = names_[int(np.argmin(layers))]
        raise ParameterError(
            f"n_stages={stages_} needs at least as many layers in every model; {shallow!r} has "
            f"{min(layers)}: use n_stages <= {min(layers)} (0: no stages)"
        )
    point = [model_statistics(r, languages, bins_, stages_) for r in loaded]

    # ---- bootstrap over items (the one resampling engine), paired when items are shared
    have_sequences = all(run is not None and has_sequences(run) for run in runs_)
    boots: list[dict[str, NDArray[np.float64]]] = []
    cluster, paired, failed = "none", False, [0] * k_models
    if n_boot_ > 0 and have_sequences:
        full_runs = [run for run in runs_ if run is not None]
        cluster = "item" if all(SEQ_ID in run.variables for run in full_runs) else "sequence"
        samplers = [
            Resampler(run, p.role, "compare_models", name=n, cluster=cluster)
            for run, p, n in zip(full_runs, params, names_, strict=True)
        ]
        keys = [set(s.units.keys) for s in samplers]
        paired = cluster == "item" and all(kk == keys[0] for kk in keys[1:])
        boots = [
            {name: np.full((n_boot_, *v.shape), np.nan) for name, v in pt.items()} for pt in point
        ]
        for b, r, result in identified_replicates(
            samplers, params, seed_, n_boot_, paired=paired, label="bootstrap of the models"
        ):
            if isinstance(result, str):
                failed[r] += 1
                continue
            for name, value in model_statistics(result, languages, bins_, stages_).items():
                boots[r][name][b] = value

    # ---- assemble
    edges = depth_edges(bins_)
    coords: dict[str, Any] = {
        MODEL: names_,
        TYPE: list(TYPES),
        LANGUAGE: languages,
        OTHER: languages,
        N_SHARED: np.arange(k + 1),
        DEPTH: (edges[:-1] + edges[1:]) / 2,
        "depth_lower": (DEPTH, edges[:-1]),
        "depth_upper": (DEPTH, edges[1:]),
    }
    if stages_ > 1:
        coords[BOUNDARY] = np.arange(1, stages_)
    data: dict[str, Any] = {
        "n_layers": ((MODEL,), np.array(layers, dtype=np.int64)),
        "n_neurons": ((MODEL,), np.array([r.sizes[NEURON] for r in loaded], dtype=np.int64)),
        "n_selected": ((MODEL,), np.array([int(r["selected"].sum()) for r in loaded], np.int64)),
        "jaccard": ((MODEL, LANGUAGE, OTHER), np.stack([p["jaccard"] for p in point])),
    }
    levels = [(1.0 - ci_) / 2.0, (1.0 + ci_) / 2.0]
    for name_, n_failed in zip(names_, failed, strict=True):
        if n_failed:
            log.warning(
                "compare_models: %d of %d replicates of %s failed", n_failed, n_boot_, name_
            )
    with warnings.catch_warnings():
        # a model whose every replicate failed has NaN intervals (n_failed says so)
        warnings.simplefilter("ignore", RuntimeWarning)
        _intervals(data, point, boots, levels)
    tokens = (
        _item_tokens([r for r in runs_ if r is not None], params, languages)
        if have_sequences
        else None
    )
    if tokens is not None:
        items, per_item = tokens
        data["tokens_per_item"] = ((MODEL,), per_item.mean(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            data["token_ratio"] = ((MODEL,), np.median(per_item / per_item[:1], axis=1))
    pairs = list(itertools.combinations(range(k_models), 2))
    mantel_rows = [
        mantel(point[i]["jaccard"], point[j]["jaccard"], n_perm_, seed_ + n)
        for n, (i, j) in enumerate(pairs)
    ]
    coords[PAIR] = [f"{names_[i]} ~ {names_[j]}" for i, j in pairs]
    data["mantel_r"] = ((PAIR,), np.array([m[0] for m in mantel_rows]))
    data["mantel_pvalue"] = ((PAIR,), np.array([m[1] for m in mantel_rows]))
    data["mantel_min_pvalue"] = ((PAIR,), np.array([m[2] for m in mantel_rows]))
    floor = 1.0 / math.factorial(k)
    if k < 3:
        mantel_inference, mantel_reason = (
            "descriptive",
            (
                f"{k} common language(s): a Mantel test needs at least 3 (the matrices have "
                f"{k * (k - 1) // 2} off-diagonal entries)"
            ),
        )
    elif floor > alpha_:
        mantel_inference, mantel_reason = (
            "descriptive",
            (
                f"with K={k} languages the smallest attainable p is 1/K! = {floor:.3g} > alpha = "
                f"{alpha_:g}: the permutation test cannot reject at that level"
            ),
        )
    else:
        mantel_inference, mantel_reason = (
            "valid",
            (
                f"languages permuted jointly (K={k}, smallest attainable p 1/K! = {floor:.3g}); "
                "the test asks whether the models' language similarity structures agree beyond "
                "a random relabelling of languages"
            ),
        )
    if not boots:
        inference, reason = (
            "descriptive",
            (NO_SEQUENCES_REASON if not have_sequences else "n_boot=0: no intervals"),
        )
    else:
        inference, reason = "descriptive", SHARES_REASON
    attrs: dict[str, Any] = {
        "analysis": "compare_models",
        "languages": languages,
        "languages_by_model": {
            n: as_labels(r[LANGUAGE]).tolist() for n, r in zip(names_, loaded, strict=True)
        },
        "languages_note": (
            f"masks, shared-by-N and Jaccard use the {k} languages every model has; types are "
            "each model's own identification over its own languages"
        ),
        "relative_depth": "layer index / (L - 1), binned on equal bins of [0, 1]",
        "bins": bins_,
        "n_stages": stages_,
        "identify_params": {n: p.to_attrs() for n, p in zip(names_, params, strict=True)},
        "mixed_parameters": mixed,
        "n_boot": n_boot_ if boots else 0,
        "n_failed": dict(zip(names_, failed, strict=True)),
        "seed": seed_,
        "ci": ci_,
        "alpha": alpha_,
        "cluster": cluster,
        "paired": paired,
        "pairing": (
            "items resampled together by seq_id in every model (the same corpus through "
            "different tokenizers is paired by item, never by token)"
            if paired
            else "models drawn independently (they do not hold the same items)"
            if boots
            else "no resampling"
        ),
        "inference": inference,
        "inference_reason": reason,
        "mantel_inference": mantel_inference,
        "mantel_reason": mantel_reason,
        "mantel_test": (
            "Pearson correlation of off-diagonal Jaccard entries; one-sided permutation p, "
            "languages permuted jointly in rows and columns"
        ),
    }
    if tokens is not None:
        attrs["n_items"] = len(tokens[0])
        attrs["tokens_note"] = (
            "token totals per item over the common languages differ between tokenizers: median "
            "ratio to the first model "
            + ", ".join(
                f"{n} {float(v):.3g}" for n, v in zip(names_, data["token_ratio"][1], strict=True)
            )
            + "; every per-item statistic pairs by seq_id, never by token"
        )
    attrs["headline"] = _headline(data, names_, coords[PAIR])
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _intervals(
    data: dict[str, Any],
    point: list[dict[str, NDArray[np.float64]]],
    boots: list[dict[str, NDArray[np.float64]]],
    levels: list[float],
) -> None:
    """Estimates, percentile intervals and differences from the first model, into ``data``."""
    for name, dims in _VARS.items():
        if name not in point[0]:
            continue
        est = np.stack([p[name] for p in point])
        data[name] = ((MODEL, *dims), est)
        if boots:
            reps = np.stack([b[name] for b in boots])  # [model, replicate, ...]
            low, high = np.nanquantile(reps, levels, axis=1)
            data[f"{name}_lower"] = ((MODEL, *dims), low)
            data[f"{name}_upper"] = ((MODEL, *dims), high)
            if name in _DIFFERENCES:
                diff = reps - reps[:1]  # [model, replicate, ...], paired replicate by replicate
                d_low, d_high = np.nanquantile(diff, levels, axis=1)
                n_ok = np.isfinite(diff).sum(axis=1)
                below = (diff <= 0).sum(axis=1)
                above = (diff >= 0).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    # never 0: the observed sign counts as one replicate (smallest 2 / (B + 1))
                    pvalue = np.where(
                        n_ok > 0,
                        np.minimum(1.0, 2.0 * (1.0 + np.minimum(below, above)) / (1.0 + n_ok)),
                        np.nan,
                    )
                pvalue[0] = np.nan
                data[f"{name}_difference"] = ((MODEL, *dims), est - est[:1])
                data[f"{name}_difference_lower"] = ((MODEL, *dims), d_low)
                data[f"{name}_difference_upper"] = ((MODEL, *dims), d_high)
                data[f"{name}_difference_pvalue"] = ((MODEL, *dims), pvalue)


def _finite(value: Any) -> float | None:
    """A float, or None when it is not finite (so attrs compare equal and serialise as JSON)."""
    out = float(value)
    return out if math.isfinite(out) else None


def _headline(data: dict[str, Any], names: list[str], pairs: list[str]) -> dict[str, Any]:
    """A JSON-ready summary: per model its shape and type shares; per pair its Mantel test."""
    shares = data["type_share"][1]
    out: dict[str, Any] = {
        "models": {
            n: {
                "layers": int(data["n_layers"][1][i]),
                "neurons_per_layer": int(data["n_neurons"][1][i]),
                **{f"{t}_share": round(float(shares[i, j]), 6) for j, t in enumerate(TYPES)},
            }
            for i, n in enumerate(names)
        },
        "mantel": {
            p: {"r": _finite(data["mantel_r"][1][i]), "p": _finite(data["mantel_pvalue"][1][i])}
            for i, p in enumerate(pairs)
        },
    }
    return out


__all__ = [
    "compare_models",
    "common_languages",
    "check_bins",
    "jaccard_matrix",
    "mantel",
    "depth_bin_of",
    "depth_edges",
]
