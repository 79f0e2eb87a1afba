"""Paired tests of per-neuron membership between runs: what can change, and what cannot.

- :func:`mcnemar`, :func:`cochran_q`: one set (the selection, or one language's mask) in two
  runs, or over an ordered series of checkpoints.
- :func:`membership_change`: every membership of two runs that can change -- each language's
  mask (sizes vary), each type's neurons (specific, related, general) -- with McNemar's test,
  and the neurons' switches between types (the transition table) with Bowker's test of
  symmetry and the Stuart-Maxwell test of marginal homogeneity.

An identification selects ``round(L N top_rate)`` neurons: two results made with one
``top_rate`` select as many neurons each, so the selection's discordant counts are equal by
construction. Tests of that margin say so (``attrs["degenerate"]``, ``attrs["reason"]``, NaN
statistic and p-value) instead of printing p = 1, and the transition tests condition on it.

Neurons are the units of these tests, as if independent: variation of the text that moves many
neurons together (a run-level shift of activation, the run's own lambda and tau) is not in their
error term, so the results declare themselves descriptive (``attrs["inference"]``). The
calibration suite (``benchmarks/calibration.py``, two runs of one truth) measures what that
costs: per-type McNemar holds its level on some shapes (FPR at 0.05: 0.045, 0.067, 0.022 on
independent n=32, n=128 and logit-normal n=32 sequences) but not on 16 sequences (0.17),
per-language masks hold it only on independent tokens (0.064, 0.066; 0.47 on logit-normal), and
Bowker / Stuart-Maxwell do not (0.23-0.29): a run whose automatic lambda lands elsewhere moves
tens of neurons between types at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import as_labels, languages_of
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, NEURON, TYPES

from . import _kernels as kern
from .type_tables import (
    check_language,
    fixed_selection,
    flat,
    load_pair,
    load_series,
    mask_rows,
    neuron_types,
)

CHECKPOINT, TYPE, FROM, TO = "checkpoint", "type", "from_type", "to_type"
#: Type names in the order of the transition table (not selected first).
TRANSITION_TYPES: tuple[str, ...] = kern.TYPE_NAMES
#: Types whose membership :func:`membership_change` tests.
MEMBERSHIP_TYPES: tuple[str, ...] = ("specific", "related", "general")
ASSUMPTION = (
    "neurons as independent units: text variation that moves many neurons together is not in "
    "the error term"
)
INFERENCE = "descriptive"


def _membership_vars(language: str | None) -> tuple[str, ...]:
    """The variables a membership needs: ``selected``, or ``mask`` for one language."""
    return ("selected",) if language is None else ("mask",)


def _membership(result: xr.Dataset, language: str | None, name: str) -> NDArray[np.bool_]:
    """Per-neuron membership: selection, or one language's mask (flat, layer-major)."""
    if language is None:
        return flat(result["selected"]).astype(bool)
    check_language(language, languages_of(result), name)
    return mask_rows(result, [language])[0]


def _mcnemar_counts(
    xa: NDArray[np.bool_], xb: NDArray[np.bool_], exact: bool | str, correction: bool
) -> tuple[NDArray[np.int64], float, float, bool]:
    """2 x 2 table, statistic, p-value and whether the exact test was used."""
    from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar

    table = np.array(
        [[np.sum(xa & xb), np.sum(xa & ~xb)], [np.sum(~xa & xb), np.sum(~xa & ~xb)]],
        dtype=np.int64,
    )
    n10, n01 = int(table[0, 1]), int(table[1, 0])
    use_exact = (n10 + n01 < 25) if exact == "auto" else bool(exact)
    if n10 + n01 == 0:
        return table, 0.0, 1.0, use_exact
    res = _sm_mcnemar(table, exact=use_exact, correction=correction)
    return table, float(res.statistic), float(res.pvalue), use_exact


def mcnemar(
    a: xr.Dataset,
    b: xr.Dataset,
    language: str | None = None,
    *,
    exact: bool | Literal["auto"] = "auto",
    correction: bool = True,
) -> xr.Dataset:
    r"""McNemar's test of per-neuron membership between two runs.

    Each neuron is a matched pair: in or out of the set in run ``a`` and in run ``b``. With
    :math:`n_{10}` neurons in ``a`` only and :math:`n_{01}` in ``b`` only, under the null of
    equal marginal proportions the discordant neurons split 1:1:

    - exact: :math:`p = \min(1, 2\,F_{\mathrm{Bin}(n_{10}+n_{01}, 1/2)}(\min(n_{10}, n_{01})))`;
    - asymptotic: :math:`\chi^2 = (|n_{10} - n_{01}| - c)^2 / (n_{10} + n_{01})` on 1 degree of
      freedom, :math:`c = 1` with the continuity correction (Edwards 1948), else 0.

    Computed with :func:`statsmodels.stats.contingency_tables.mcnemar`. The selection of two
    identifications with one ``top_rate`` has :math:`n_{10} = n_{01}` by construction: that
    margin is not tested (``attrs["degenerate"]`` is True with the reason, statistic and
    p-value NaN); :func:`membership_change` tests what can change.

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results on the same layer x neuron grid (with ``language``, any
        Dataset with ``mask[language, layer, neuron]`` works, e.g. an imported LAPE mask file
        from :func:`~langneurons.analysis.identify.masks_from_lists`).
    language : str, optional
        None: the set is the selected neurons; a language: that language's mask.
    exact : bool or "auto"
        Binomial test; ``"auto"`` uses it when :math:`n_{10} + n_{01} < 25`.
    correction : bool
        Continuity correction of the asymptotic test.

    Returns
    -------
    xarray.Dataset
        ``table[in_a, in_b]`` (coords ``True``, ``False``), ``statistic`` (``min(n10, n01)``
        for the exact test, :math:`\chi^2` otherwise), ``pvalue``, ``n_a_only``, ``n_b_only``,
        ``n_both``, ``n_neither``; ``attrs`` record the set, ``exact`` (as used),
        ``correction`` and ``degenerate`` (with ``reason`` when True). Without discordant
        neurons the statistic is 0 and p = 1.

    Raises
    ------
    ParameterError
        Bad inputs, different grids, or a language missing from either result.

    References
    ----------
    McNemar (1947), Psychometrika 12; Edwards (1948), Psychometrika 13.
    """
    if not (exact == "auto" or isinstance(exact, bool)):
        raise ParameterError(f"exact must be True, False or 'auto', got {exact!r}")
    if not isinstance(correction, bool):
        raise ParameterError(f"correction must be True or False, got {correction!r}")
    da, db = load_pair(a, b, _membership_vars(language))
    xa, xb = _membership(da, language, "a"), _membership(db, language, "b")
    table, stat, p, use_exact = _mcnemar_counts(xa, xb, exact, correction)
    reason = fixed_selection([da, db]) if language is None else None
    if reason is not None:
        stat, p = float("nan"), float("nan")
    flag = ["True", "False"]
    attrs: dict[str, Any] = {
        "test": "McNemar",
        "set": "selected" if language is None else f"mask:{language}",
        "exact": use_exact,
        "exact_requested": exact,
        "correction": correction,
        "degenerate": reason is not None,
        "assumption": ASSUMPTION,
        "inference": INFERENCE,
    }
    if reason is not None:
        attrs["reason"] = reason
    return xr.Dataset(
        {
            "table": (("in_a", "in_b"), table),
            "statistic": ((), stat),
            "pvalue": ((), p),
            "n_a_only": ((), int(table[0, 1])),
            "n_b_only": ((), int(table[1, 0])),
            "n_both": ((), int(table[0, 0])),
            "n_neither": ((), int(table[1, 1])),
        },
        coords={"in_a": flag, "in_b": flag},
        attrs=attrs,
    )


def checkpoint_labels(labels: object, n: int) -> list[str]:
    """Checkpoint labels: distinct strings, one per result (default "0".."n-1")."""
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ParameterError(f"labels must be a sequence of {n} strings, got {labels!r}")
    out = [str(x) for x in labels]
    if len(out) != n or len(set(out)) != n:
        raise ParameterError(f"labels must be {n} distinct names (one per result), got {out!r}")
    return out


def cochran_q(
    results: Sequence[xr.Dataset],
    *,
    language: str | None = None,
    labels: Sequence[str] | None = None,
) -> xr.Dataset:
    r"""Cochran's Q test of per-neuron membership over an ordered series of checkpoints.

    With T checkpoints, :math:`x_{i,t} \in \{0, 1\}` the membership of neuron i at checkpoint
    t, column totals :math:`C_t`, row totals :math:`R_i` and :math:`N = \sum_t C_t`:

    .. math:: Q = (T - 1) \frac{T \sum_t C_t^2 - N^2}{T N - \sum_i R_i^2}

    is asymptotically :math:`\chi^2_{T-1}` under the null that the membership probability is
    the same at every checkpoint. Neurons with the same membership at every checkpoint do not
    change Q and are left out before calling
    :func:`statsmodels.stats.contingency_tables.cochrans_q`. For T = 2, Q is McNemar's
    statistic without continuity correction. The selections of identifications with one
    ``top_rate`` have equal column totals by construction, so Q = 0 always: not tested
    (``attrs["degenerate"]``, NaN statistic and p-value).

    Parameters
    ----------
    results : sequence of xarray.Dataset
        At least 2 identification results on the same grid, in checkpoint order (with
        ``language``, mask-only Datasets work too, as in :func:`mcnemar`).
    language : str, optional
        None: membership = selected; a language: that language's mask.
    labels : sequence of str, optional
        Checkpoint names (default "0", "1", ...).

    Returns
    -------
    xarray.Dataset
        ``statistic``, ``pvalue``, ``df``, ``n_discordant`` (neurons whose membership changes
        at least once), ``count[checkpoint]`` and ``proportion[checkpoint]``. Without
        discordant neurons Q is 0 and p = 1.

    References
    ----------
    Cochran (1950), "The comparison of percentages in matched samples", Biometrika 37.
    """
    from statsmodels.stats.contingency_tables import cochrans_q as _sm_cochrans_q

    loaded = load_series(results, 2, _membership_vars(language))
    names = checkpoint_labels(labels, len(loaded))
    x = np.stack([_membership(r, language, f"results[{i}]") for i, r in enumerate(loaded)], axis=1)
    t = x.shape[1]
    rows = x.sum(axis=1)
    discordant = (rows > 0) & (rows < t)
    n_disc = int(discordant.sum())
    if n_disc == 0:
        stat, p = 0.0, 1.0
    else:
        res = _sm_cochrans_q(x[discordant].astype(np.int64))
        stat, p = float(res.statistic), float(res.pvalue)
    reason = fixed_selection(loaded) if language is None else None
    if reason is not None:
        stat, p = float("nan"), float("nan")
    count = x.sum(axis=0).astype(np.int64)
    attrs: dict[str, Any] = {
        "test": "Cochran's Q",
        "set": "selected" if language is None else f"mask:{language}",
        "n_neurons": int(x.shape[0]),
        "degenerate": reason is not None,
        "assumption": ASSUMPTION,
        "inference": INFERENCE,
    }
    if reason is not None:
        attrs["reason"] = reason
    return xr.Dataset(
        {
            "statistic": ((), stat),
            "pvalue": ((), p),
            "df": ((), t - 1),
            "n_discordant": ((), n_disc),
            "count": ((CHECKPOINT,), count),
            "proportion": ((CHECKPOINT,), count / x.shape[0]),
        },
        coords={CHECKPOINT: names},
        attrs=attrs,
    )


# --------------------------------------------------------------------------- what can change


def type_codes(result: xr.Dataset, name: str) -> NDArray[np.int64]:
    """``neuron_type`` as codes into :data:`TRANSITION_TYPES`, shaped ``[layer, neuron]``."""
    names = as_labels(result["neuron_type"].transpose(LAYER, NEURON))
    codes = np.full(names.shape, -1, dtype=np.int64)
    for i, t in enumerate(TRANSITION_TYPES):
        codes[names == t] = i
    if (codes < 0).any():
        bad = sorted(set(names[codes < 0].tolist()))
        raise ParameterError(
            f"{name}.neuron_type holds unknown types {bad}; expected {list(TRANSITION_TYPES)}"
        )
    return codes


def bowker(count: NDArray[Any], fixed: int | None = None) -> tuple[float, int, float]:
    r"""Bowker's test of symmetry of a square table: statistic, df, p-value.

    :math:`B = \sum_{i<j} (n_{ij} - n_{ji})^2 / (n_{ij} + n_{ji})` over the pairs with
    :math:`n_{ij} + n_{ji} > 0`, :math:`\chi^2` on as many df. With ``fixed`` (a category
    whose row and column totals are equal by construction) the pairs' differences of that
    category sum to 0, which removes one degree of freedom (the normal approximation of the
    pairs' differences conditioned on that sum). NaN when no degree of freedom is left.
    """
    import scipy.stats

    n = np.asarray(count, dtype=np.float64)
    i, j = np.triu_indices(n.shape[0], 1)
    s = n[i, j] + n[j, i]
    keep = s > 0
    stat = float((((n[i, j] - n[j, i]) ** 2)[keep] / s[keep]).sum())
    df = int(keep.sum())
    if fixed is not None and bool((keep & ((i == fixed) | (j == fixed))).any()):
        df -= 1
    if df <= 0:
        return float("nan"), 0, float("nan")
    return stat, df, float(scipy.stats.chi2.sf(stat, df))


def stuart_maxwell(count: NDArray[Any], fixed: int | None = None) -> tuple[float, int, float]:
    r"""Stuart-Maxwell test of marginal homogeneity of a square table: statistic, df, p-value.

    With :math:`d_i = n_{i\cdot} - n_{\cdot i}` and :math:`V_{ii} = n_{i\cdot} + n_{\cdot i} -
    2 n_{ii}`, :math:`V_{ij} = -(n_{ij} + n_{ji})`, :math:`S = d^\top V^{+} d` on
    :math:`\mathrm{rank}(V)` df (Stuart 1955; Maxwell 1970). With ``fixed`` (a category whose
    margins are equal by construction), :math:`d` and :math:`V` are taken over the other
    categories and :math:`V` conditioned on :math:`\sum_i d_i = 0`
    (:math:`V - V\mathbf 1 \mathbf 1^\top V / \mathbf 1^\top V \mathbf 1`). NaN when no
    degree of freedom is left.
    """
    import scipy.stats

    n = np.asarray(count, dtype=np.float64)
    d = n.sum(axis=1) - n.sum(axis=0)
    v = -(n + n.T)
    np.fill_diagonal(v, n.sum(axis=1) + n.sum(axis=0) - 2 * np.diag(n))
    if fixed is not None:
        keep = np.arange(n.shape[0]) != fixed
        d, v = d[keep], v[np.ix_(keep, keep)]
        ones = np.ones(d.size)
        total = float(ones @ v @ ones)
        if total > 0:
            v = v - np.outer(v @ ones, ones @ v) / total
    df = int(np.linalg.matrix_rank(v, tol=1e-9)) if v.size else 0
    if df <= 0:
        return float("nan"), 0, float("nan")
    stat = float(d @ np.linalg.pinv(v, rcond=1e-10) @ d)
    return stat, df, float(scipy.stats.chi2.sf(stat, df))


def membership_change(a: xr.Dataset, b: xr.Dataset) -> xr.Dataset:
    r"""Every per-neuron membership of two runs that can change, with paired tests.

    - Each language's mask (``language_*``, McNemar): the sizes of the masks vary between runs.
    - Each type's neurons (``type_*`` for specific, related, general; McNemar).
    - Switches between types (``count[from_type, to_type]``, as in
      :func:`~langneurons.analysis.compare.transition_table`): Bowker's test of symmetry
      (``bowker_*``: do as many neurons move s -> t as t -> s?) and the Stuart-Maxwell test of
      marginal homogeneity (``stuart_maxwell_*``: are the type totals the same?).
    - The selection (``selected_*``): its size is reported; when it is equal by construction
      (one ``top_rate``), ``attrs["degenerate"]`` is True with the reason and the transition
      tests condition on the fixed "none" margin (one degree of freedom fewer).

    p-values are uncorrected for the number of tests.

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results on the same layer x neuron grid.

    Returns
    -------
    xarray.Dataset
        ``language_n_a_only``, ``language_n_b_only``, ``language_statistic``,
        ``language_pvalue`` on ``[language]`` (languages of both); the same ``type_*`` on
        ``[type]``; ``count[from_type, to_type]``; scalars ``bowker_statistic``,
        ``bowker_df``, ``bowker_pvalue``, ``stuart_maxwell_statistic``,
        ``stuart_maxwell_df``, ``stuart_maxwell_pvalue``, ``selected_n_a``,
        ``selected_n_b``; and the variables of ``mcnemar(a, b)`` for the selection
        (``table``, ``statistic``, ``pvalue``, ``n_a_only``, ... ; NaN statistic and p-value
        when ``attrs["degenerate"]``).

    References
    ----------
    McNemar (1947); Bowker (1948), JASA 43; Stuart (1955), Biometrika 42; Maxwell (1970),
    Br. J. Psychiatry 116.
    """
    da, db = load_pair(a, b, ("selected", "mask", "neuron_type"))
    la, lb = languages_of(da), languages_of(db)
    common = [x for x in la if x in lb]
    ma, mb = mask_rows(da, common), mask_rows(db, common)
    ta, tb = neuron_types(da), neuron_types(db)
    lang = [_mcnemar_counts(ma[i], mb[i], "auto", True) for i in range(len(common))]
    kinds = [_mcnemar_counts(ta == t, tb == t, "auto", True) for t in MEMBERSHIP_TYPES]
    t = len(TRANSITION_TYPES)
    count = np.bincount(
        (type_codes(da, "a") * t + type_codes(db, "b")).reshape(-1), minlength=t * t
    ).reshape(t, t)
    reason = fixed_selection([da, db])
    sel_a, sel_b = flat(da["selected"]).astype(bool), flat(db["selected"]).astype(bool)
    sel_table, sel_stat, sel_p, _ = _mcnemar_counts(sel_a, sel_b, "auto", True)
    if reason is not None:
        sel_stat, sel_p = float("nan"), float("nan")
    fixed = TRANSITION_TYPES.index("none") if reason is not None else None
    bw, sm = bowker(count, fixed), stuart_maxwell(count, fixed)

    def cols(tests: list[tuple[NDArray[np.int64], float, float, bool]], dim: str) -> dict[str, Any]:
        return {
            "n_a_only": ((dim,), np.array([x[0][0, 1] for x in tests], dtype=np.int64)),
            "n_b_only": ((dim,), np.array([x[0][1, 0] for x in tests], dtype=np.int64)),
            "statistic": ((dim,), np.array([x[1] for x in tests], dtype=np.float64)),
            "pvalue": ((dim,), np.array([x[2] for x in tests], dtype=np.float64)),
        }

    data: dict[str, Any] = {f"language_{k}": v for k, v in cols(lang, LANGUAGE).items()}
    data.update({f"type_{k}": v for k, v in cols(kinds, TYPE).items()})
    data.update(
        count=((FROM, TO), count.astype(np.int64)),
        bowker_statistic=((), bw[0]),
        bowker_df=((), bw[1]),
        bowker_pvalue=((), bw[2]),
        stuart_maxwell_statistic=((), sm[0]),
        stuart_maxwell_df=((), sm[1]),
        stuart_maxwell_pvalue=((), sm[2]),
        selected_n_a=((), int(sel_a.sum())),
        selected_n_b=((), int(sel_b.sum())),
        # McNemar of the selection, as in mcnemar(a, b) (NaN when its margin is fixed)
        table=(("in_a", "in_b"), sel_table),
        statistic=((), sel_stat),
        pvalue=((), sel_p),
        n_a_only=((), int(sel_table[0, 1])),
        n_b_only=((), int(sel_table[1, 0])),
        n_both=((), int(sel_table[0, 0])),
        n_neither=((), int(sel_table[1, 1])),
    )
    attrs: dict[str, Any] = {
        "test": "McNemar per language mask and per type; Bowker; Stuart-Maxwell",
        "degenerate": reason is not None,
        "pvalue": "uncorrected for the number of tests",
        "assumption": ASSUMPTION,
        "inference": INFERENCE,
        "languages_only_in_a": [x for x in la if x not in lb],
        "languages_only_in_b": [x for x in lb if x not in la],
    }
    if reason is not None:
        attrs["reason"] = reason
    return xr.Dataset(
        data,
        coords={
            LANGUAGE: np.asarray(common, dtype=str),
            TYPE: list(MEMBERSHIP_TYPES),
            FROM: list(TRANSITION_TYPES),
            TO: list(TRANSITION_TYPES),
            "in_a": ["True", "False"],
            "in_b": ["True", "False"],
        },
        attrs=attrs,
    )


__all__ = [
    "TRANSITION_TYPES",
    "MEMBERSHIP_TYPES",
    "mcnemar",
    "cochran_q",
    "membership_change",
    "bowker",
    "stuart_maxwell",
    "type_codes",
    "checkpoint_labels",
    "TYPES",
]
