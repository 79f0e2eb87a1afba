"""Per-neuron hypothesis tests of language preference, with false discovery rate control.

For every neuron and every language ``k`` one one-sided test of

    H0: P[k] <= P[rest]   against   H1: P[k] > P[rest],

where ``P[rest]`` pools the other languages (ratio of their summed counts to their summed
tokens). All L * N * K tests are run as array operations over every neuron at once; their
p-values are adjusted together (Benjamini-Hochberg or Benjamini-Yekutieli) across ALL tests.
:func:`compare_with_identification` then sets the FDR-significant (neuron, language) pairs
against an identification rule's assignment.

Why this module is long: it holds the two test families the CLI offers (the cluster-robust t
test over sequences or items, and the token-level binomial with its design-effect variant,
each with the margin and the inference label the calibration suite measured) and the FDR step
they share; each is a short kernel plus its checks, and splitting them would split one
table of results across modules.
"""

from __future__ import annotations

import logging
from numbers import Real
from typing import Any, Literal, get_args

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._kernels import conditional_tail, upper_tail
from langneurons.analysis._resample import (
    choose_cluster,
    design,
    has_sequences,
    repeated_items,
    streamed_sums,
)
from langneurons.analysis._validate import (
    CORRUPT,
    check_choice,
    check_open_unit,
    check_tokens,
    checked_role_sums,
    stored_roles,
)
from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.errors import ParameterError, StoreValidationError
from langneurons.names import LANGUAGE, LAYER, NEURON

from .uncertainty import (
    INDEPENDENT_SEQUENCES,
    INDEPENDENT_TOKENS,
    SEQUENCES_OF_ITEMS,
    ClusterChoice,
    Role,
    check_count_run,
    check_design_effect,
    inference_label,
    token_level_cluster,
)

log = logging.getLogger(__name__)

TestMethod = Literal["auto", "cluster", "binomial"]
Correction = Literal["fdr_bh", "fdr_by"]

FloatArray = NDArray[np.float64]

_ASSUMPTIONS: dict[str, str] = {
    "binomial": INDEPENDENT_TOKENS,
    "cluster": INDEPENDENT_SEQUENCES + "; Student t reference with min(Welch-Satterthwaite, "
    "n_k - 1) df",
}
_ITEMS = (
    "independent items within each language (all sequences of one item, seq_id, are one "
    "cluster); conservative when item effects correlate positively across languages; Student "
    "t reference with min(Welch-Satterthwaite, n_k - 1) df"
)
_TESTS: dict[str, str] = {
    "binomial": "pooled two-proportion z-test on token counts",
    "cluster": "Welch-type test of ratio estimates with cluster-robust delta-method "
    "variances (sequences or items as clusters, languages as strata), Student t reference "
    "with the smaller of the Welch-Satterthwaite df and the own language's clusters - 1",
}


_BLOCK_BYTES = 32 << 20  # working memory of one block of layers (about a dozen float64 arrays)


def _by_layers(
    shape: tuple[int, int, int], compute: Any, temporaries: int = 16
) -> dict[str, FloatArray]:
    """Gather ``compute(l0, l1)`` (arrays on ``[language, l, neuron]``) over blocks of layers.

    The results land in ``[layer, neuron, language]`` arrays allocated once, so the peak is the
    result itself plus one block's temporaries, not a dozen full-size intermediates. Every
    operation is elementwise or over languages, so the values do not depend on the blocks.
    """
    k, n_layers, n_neurons = shape
    step = max(1, _BLOCK_BYTES // max(1, temporaries * k * n_neurons * 8))
    out: dict[str, FloatArray] = {}
    for l0 in range(0, n_layers, step):
        l1 = min(n_layers, l0 + step)
        for name, value in compute(l0, l1).items():
            if name not in out:
                out[name] = np.empty((n_layers, n_neurons, k), dtype=np.float64)
            out[name][l0:l1] = np.moveaxis(value, 0, -1)
    return out


def _statistics(
    rate: FloatArray,
    rate_rest: FloatArray,
    var: FloatArray,
    df: FloatArray | None = None,
    margin: float = 0.0,
    var_margin: FloatArray | None = None,
) -> dict[str, FloatArray]:
    """The test's outputs from the two rates and the variance of their difference.

    ``df``: degrees of freedom of a Student t reference (inf where ``var`` is 0); ``None``
    for the normal reference (df inf throughout). ``margin > 0``: also ``p0`` (the test of
    margin 0), and ``p``/``z`` test ``effect <= margin`` with ``var_margin`` (default ``var``).
    """
    effect = rate - rate_rest
    z, p = upper_tail(effect, var, df)
    extra: dict[str, FloatArray] = {}
    if margin > 0.0:
        extra["p0"] = p
        z, p = upper_tail(effect - margin, var if var_margin is None else var_margin, df)
    return {
        **extra,
        "rate": rate,
        "rate_rest": rate_rest,
        "effect": effect,
        "se": np.sqrt(var),
        "z": z,
        "p": p,
        "df": np.full_like(z, np.inf) if df is None else np.where(var > 0, df, np.inf),
    }


def _binomial(
    counts: tuple[NDArray[Any], NDArray[Any]],
    languages: list[str],
    roles: tuple[str, ...],
    margin: float = 0.0,
    deff: float | None = None,
) -> dict[str, FloatArray]:
    """Pooled two-proportion z-test per (language, neuron) on token counts (independent tokens).

    ``z = (p_k - p_r) / sqrt(D p (1 - p) (1/n_k + 1/n_r))`` with the pooled ``p = sum x / sum
    n`` and design effect ``D``; with a margin, the unpooled variance ``D (p_k (1 - p_k) / n_k
    + p_r (1 - p_r) / n_r)``. With a design effect the p-value is the conditional tail
    (``_kernels.conditional_tail``; with a margin, the larger of that and the margin's z
    tail). Returns arrays on ``[layer, neuron, language]``.
    """
    x_all = np.asarray(counts[0], dtype=np.float64)
    n = np.asarray(counts[1], dtype=np.float64)
    check_tokens(n, languages, roles)
    n_rest = n.sum() - n

    def block(l0: int, l1: int) -> dict[str, FloatArray]:
        x = x_all[:, l0:l1]
        x_rest = x.sum(axis=0) - x
        rate = x / n[:, None, None]
        rate_rest = x_rest / n_rest[:, None, None]
        pooled = x.sum(axis=0) / n.sum()
        d = 1.0 if deff is None else deff
        var = d * pooled * (1.0 - pooled) * (1.0 / n + 1.0 / n_rest)[:, None, None]
        var_margin = None
        if margin > 0.0:
            var_margin = rate * (1.0 - rate) / n[:, None, None]
            var_margin += rate_rest * (1.0 - rate_rest) / n_rest[:, None, None]
            var_margin *= d
        out = _statistics(rate, rate_rest, var, margin=margin, var_margin=var_margin)
        if deff is not None:
            # the normal tail of a sparse count deflated by D is too thin: 0.015-0.018 of
            # null p-values fell below 0.01 at the true D, and BH's FDR reached 0.2
            exact = conditional_tail(x, n, pooled, deff)
            if margin > 0.0:  # a margin null contains the plain one: never the smaller p
                out["p0"] = exact
                out["p"] = np.maximum(out["p"], exact)
            else:
                out["p"] = exact
        return out

    return _by_layers(x_all.shape, block)


def _cluster(
    run: xr.Dataset,
    role: str,
    cluster: str,
    margin: float = 0.0,
    counts: tuple[NDArray[Any], NDArray[Any]] | None = None,
) -> tuple[dict[str, FloatArray], dict[str, Any]]:
    r"""Welch-type t-test of ratio estimators with cluster-robust (delta-method) variances.

    ``cluster``: ``"auto"``, ``"sequence"`` or ``"item"`` (the clusters; languages are strata).

    Own language: :math:`V_k = c_k \sum_i (a_i - \hat P_k t_i)^2 / T_k^2`, :math:`c = n/(n-1)`.
    Rest (languages as strata, sequences as clusters, common ratio :math:`R`):
    :math:`V_r = \sum_{j \ne k} c_j \sum_{i \in j} (d_i - \bar d_j)^2 / T_r^2` with
    :math:`d_i = a_i - R t_i`, expanded into per-language sums. Returns arrays on
    ``[layer, neuron, language]``. ``counts``: the run's checked ``n_active`` and
    ``n_tokens`` summed over the roles, which the per-sequence counts must add up to.
    """
    design_ = design(
        run,
        role,
        "method='cluster'",
        fix="extract with --per-sequence (per-sequence counts make the sequence the sampled "
        "unit), or use method='binomial' (assumes independent tokens)",
    )
    used = choose_cluster(run, design_, cluster)
    sums, n_clusters = streamed_sums(run, design_, used)  # one pass of the chunked reader
    a_all = np.asarray(sums["A"].transpose(LANGUAGE, LAYER, NEURON).values)
    s2_all = np.asarray(sums["S2"].transpose(LANGUAGE, LAYER, NEURON).values)
    sat_all = np.asarray(sums["SAT"].transpose(LANGUAGE, LAYER, NEURON).values)
    t = np.asarray(sums["T"].values)
    stt = np.asarray(sums["STT"].values)
    del sums
    if counts is not None:
        _check_sums(a_all, t, counts, design_.languages)
    check_tokens(t, design_.languages, design_.roles)
    n = n_clusters.astype(np.float64)
    c = n / (n - 1.0)
    col = (slice(None), None, None)
    t_rest = t.sum() - t
    u2 = c * stt - (c / n) * t * t  # stratified pieces, see below
    # Welch-Satterthwaite from own language n_k - 1, the rest sum_j (n_j - 1) degrees of freedom
    df_own = (n - 1.0)[col]
    df_rest = ((n - 1.0).sum() - (n - 1.0))[col]

    def block(l0: int, l1: int) -> dict[str, FloatArray]:
        a, s2, sat = a_all[:, l0:l1], s2_all[:, l0:l1], sat_all[:, l0:l1]
        rate = a / t[col]
        var_own = c[col] * np.maximum(s2 - 2.0 * rate * sat + rate * rate * stt[col], 0.0)
        var_own /= (t * t)[col]
        # stratified pieces: U0 = c S2 - c/n A^2, U1 = c SAT - c/n A T, U2 = c STT - c/n T^2
        u0 = c[col] * s2 - (c / n)[col] * a * a
        u1 = c[col] * sat - (c / n)[col] * a * t[col]
        a_rest = a.sum(axis=0) - a
        rate_rest = a_rest / t_rest[col]
        resid = (u0.sum(axis=0) - u0) - 2.0 * rate_rest * (u1.sum(axis=0) - u1)
        resid += rate_rest * rate_rest * (u2.sum() - u2)[col]
        var_rest = np.maximum(resid, 0.0) / (t_rest * t_rest)[col]
        var = var_own + var_rest
        with np.errstate(divide="ignore", invalid="ignore"):
            df = var * var / (var_own * var_own / df_own + var_rest * var_rest / df_rest)
        # at most the own language's clusters - 1 (Welch's conservative df): with 8 clusters
        # the Welch-Satterthwaite df let 0.0015-0.002 of null p-values below 0.001
        df = np.minimum(df, df_own)
        return _statistics(rate, rate_rest, var, df, margin=margin)

    info: dict[str, Any] = {"cluster": used, "n_sequences": design_.n_per_language()}
    if used == "sequence" and repeated_items(run, design_):
        info["inference_reason"] = SEQUENCES_OF_ITEMS
    if used == "item":
        info["n_items"] = {
            lang: int(g) for lang, g in zip(design_.languages, n_clusters, strict=True)
        }
    return _by_layers(a_all.shape, block), info


_EFFECT_CI = 0.95  # level of the effect's interval (descriptive for token-level methods)


def _interval_z() -> float:
    """The normal quantile of the effect's interval (scipy imported here, not at start-up)."""
    from scipy import special

    return float(special.ndtri(0.5 + _EFFECT_CI / 2.0))


def check_margin(value: object) -> float:
    """``min_effect``: a number in [0, 1)."""
    if isinstance(value, Real) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0:
        return float(value)
    raise ParameterError(
        f"min_effect must be a number in [0, 1) (a margin on P[language] - P[rest]; 0 tests "
        f"P[language] <= P[rest]), got {value!r}"
    )


def _fdr(p: FloatArray, alpha: float, correction: str) -> tuple[NDArray[np.bool_], FloatArray]:
    """The step-up rule over all p-values: ``significant`` and ``q`` in ``p``'s shape."""
    from statsmodels.stats.multitest import multipletests

    reject, q, _, _ = multipletests(
        p.reshape(-1), alpha=alpha, method=correction, is_sorted=False, returnsorted=False
    )
    shaped = np.asarray(q, dtype=np.float64).reshape(p.shape)
    return np.asarray(reject, dtype=np.bool_).reshape(p.shape), shaped


def _check_sums(
    active: NDArray[Any],
    tokens: NDArray[Any],
    counts: tuple[NDArray[Any], NDArray[Any]],
    languages: list[str],
) -> None:
    """StoreValidationError when the per-sequence counts summed per language (``active``
    ``[language, layer, neuron]``, ``tokens`` ``[language]``, float64 sums of integers) are not
    the run's ``n_active`` and ``n_tokens`` (``counts``, summed over the same roles)."""
    for name, mine, whole in (
        ("seq_n_tokens", tokens, counts[1]),
        ("seq_n_active", active, counts[0]),
    ):
        whole = np.asarray(whole, dtype=np.float64).reshape(len(languages), -1)
        bad = np.flatnonzero((mine.reshape(len(languages), -1) != whole).any(axis=1))
        if bad.size:
            lang = languages[int(bad[0])]
            raise StoreValidationError(
                f"run: {name} of language {lang!r} does not sum to {name[4:]}; {CORRUPT}"
            )


def language_preference_tests(
    run: xr.Dataset,
    *,
    role: Role = "response",
    method: TestMethod = "auto",
    correction: Correction = "fdr_bh",
    alpha: float = 0.05,
    cluster: ClusterChoice = "auto",
    design_effect: float | None = None,
    min_effect: float = 0.0,
) -> xr.Dataset:
    r"""One-sided tests of "this neuron fires more in language k than in the others".

    For each neuron and language :math:`k`: :math:`H_0: P_k - P_{rest} \le \delta` against
    :math:`H_1: P_k - P_{rest} > \delta` (``min_effect`` :math:`\delta`, default 0), where
    :math:`P_{rest} = \sum_{j \ne k} A_j / \sum_{j \ne k} T_j` pools the other languages.
    The statistic is :math:`z = (\hat P_k - \hat P_{rest} - \delta) / \sqrt{V}`.

    **Which statistics are valid for which data.** Tokens of one sequence share topic,
    register and the model's state, so they are not independent draws; the unit that is
    sampled, and so the unit of replication, is the sequence, or the item (prompt, ``seq_id``)
    when one item has several sequences (responses) in a language.

    - Per-sequence counts (extract with ``--per-sequence``): ``"cluster"`` is valid inference
      (``attrs["inference"] == "valid"``). It clusters on items whenever an item has more
      than one sequence in a language (``cluster="auto"``), else on sequences; clustering on
      sequences when items repeat treats correlated responses as independent (FPR 0.16 at
      0.05 with 10 responses per item in the calibration suite). The Student t reference
      with (at most) :math:`n_k - 1` df keeps the level with 8 clusters per language down
      to alpha = 0.001 in the suite (conservative there: 0.0001-0.0002 at 0.001, about 0.04
      at 0.05); with fewer clusters, or far below 0.001, it is untested.
    - Token counts only: ``"binomial"`` treats every token as an independent draw. Its
      p-values are ``"descriptive"`` (FPR 0.14-0.26 at 0.05 on heterogeneous data): rank
      neurons by them, report ``effect`` with its interval, but do not call them
      significant. With a design effect ``D`` (``Var = D x binomial variance``, effective
      ``n = T / D``) that is known or bounded from comparable data with per-sequence
      counts, they are inference under that assumption
      (``"design-effect adjusted (D=...)"``); a D smaller than the truth is anticonservative.
    - Item effects correlated across languages (parallel translations): the item-clustered
      test treats the languages as independent strata, which is conservative when the
      correlation is positive.

    - ``"cluster"`` (per-sequence counts; sequences are clusters, languages strata): Welch-type
      :math:`V = V_k + V_{rest}` with delta-method variances of the two ratio estimators,
      :math:`V_k = \frac{n_k}{n_k-1} \sum_{i \in k} (a_i - \hat P_k t_i)^2 / T_k^2` and
      :math:`V_{rest} = \sum_{j \ne k} \frac{n_j}{n_j-1} \sum_{i \in j}
      (d_i - \bar d_j)^2 / T_{rest}^2`, :math:`d_i = a_i - \hat P_{rest} t_i`. The p-value
      is the upper tail of Student's t with the smaller of the Welch-Satterthwaite degrees
      of freedom :math:`V^2 / (V_k^2 / (n_k - 1) + V_{rest}^2 / \sum_{j \ne k} (n_j - 1))`
      and :math:`n_k - 1` (Welch's conservative choice: the normal tail, and even the
      Welch-Satterthwaite t, are too small far out with few clusters, and the FDR
      thresholds of many tests live far out; the cost is little power once clusters are
      many).
    - ``"binomial"`` (token counts only; assumes independent tokens): the pooled
      two-proportion z-test, :math:`V = D \bar p (1 - \bar p)(1/T_k + 1/T_{rest})` with
      :math:`\bar p = \sum_j A_j / \sum_j T_j` and design effect :math:`D` (1 unless
      given), and the normal upper tail :math:`1 - \Phi(z)`. With a margin
      :math:`\delta > 0` the unpooled :math:`V = D (\hat P_k (1 - \hat P_k) / T_k +
      \hat P_{rest} (1 - \hat P_{rest}) / T_{rest})`. With a design effect the p-value is
      instead the conditional tail of language k's count given the neuron's total
      :math:`X`: counts divided by :math:`D (1 - \bar p)` (matching the mean and the
      variance, inflated by D, of the hypergeometric null), :math:`p = P(\mathrm{Bin}(X',
      \pi_k) \ge A_k') = I_{\pi_k}(A_k', X' - A_k' + 1)` with :math:`\pi_k = T_k / \sum_j
      T_j` (the regularised incomplete beta, continuous in the effective counts); with a
      margin, the larger of that and the margin's z tail. The normal tail of a sparse count
      deflated by D is too thin: at the true D it let 0.015-0.018 of null p-values below
      0.01 and BH's FDR reach 0.2 in the calibration suite; the conditional tail holds
      every level there (conservative: about 0.03 at 0.05 on sparse neurons).

    Where :math:`V = 0` the p-value is 0 for a positive difference and 1 otherwise. The
    ``L N K`` p-values are adjusted together with
    :func:`statsmodels.stats.multitest.multipletests` (``"fdr_bh"``: Benjamini-Hochberg,
    valid under independence or positive dependence; ``"fdr_by"``: Benjamini-Yekutieli,
    valid under any dependence).

    Parameters
    ----------
    run : xarray.Dataset
        A run (numpy- or dask-backed; identical results).
    role : {"response", "prompt", "all"}
        Which counted tokens to use.
    method : {"auto", "cluster", "binomial"}
        ``"auto"``: ``"cluster"`` when the run has per-sequence counts, else ``"binomial"``.
    correction : {"fdr_bh", "fdr_by"}
        The false discovery rate procedure.
    alpha : float in (0, 1)
        The FDR level of ``significant``.
    cluster : {"auto", "item", "sequence"}
        The unit of replication of ``"cluster"``: ``"auto"`` (default) is the item
        (``seq_id``) whenever an item has more than one sequence in a language, else the
        sequence. ``"item"`` needs ``seq_id``; ``"item"``/``"sequence"`` need per-sequence
        counts.
    design_effect : float >= 1, optional
        For ``"binomial"`` only: the variance inflation of token counts (effective sample
        size ``T / D``). Turns the descriptive p-values into inference under that stated
        assumption. Default: none (descriptive).
    min_effect : float in [0, 1)
        The practical margin :math:`\delta` of the null :math:`P_k - P_{rest} \le \delta`.
        Default 0 (the plain test). The FDR step runs on the margin's p-values; the count
        without the margin is reported too.

    Returns
    -------
    xarray.Dataset
        On ``[layer, neuron, language]`` (float64 unless noted): ``p`` (one-sided p-value),
        ``q`` (FDR-adjusted), ``significant`` (bool, ``q <= alpha`` by the step-up rule),
        ``effect`` (:math:`\hat P_k - \hat P_{rest}`), ``statistic`` (z), ``df`` (degrees
        of freedom of its reference t; inf for the normal), ``se`` (of the difference),
        ``rate`` (:math:`\hat P_k`), ``rate_rest``, ``effect_lower`` / ``effect_upper`` (95 %
        interval of the effect on the test's reference distribution; descriptive for
        ``"binomial"`` without a design effect). ``attrs``: ``method``,
        ``method_requested``, ``role``, ``correction``, ``alpha``, ``alternative``,
        ``null``, ``min_effect``, ``test``, ``assumption``, ``inference`` (``"valid"``,
        ``"descriptive"`` or ``"design-effect adjusted (D=...)"``), ``cluster`` (``"item"``,
        ``"sequence"`` or ``"token"``), ``cluster_requested``, ``design_effect`` (when given),
        ``n_tests``, ``n_significant``, ``n_significant_per_language``,
        ``n_significant_without_margin`` (and per language) and, for ``"cluster"``,
        ``n_sequences`` (and ``n_items`` when clustered on items). Always computes (the FDR
        step needs every p-value).

    Raises
    ------
    ParameterError
        A parameter is out of range, the run has fewer than 2 languages, a language has no
        tokens, ``"cluster"`` without per-sequence counts (extract with ``--per-sequence``),
        fewer than 2 sequences (items) in a language, ``cluster="item"`` without ``seq_id``
        or per-sequence counts, ``design_effect < 1`` or with a per-sequence method,
        ``min_effect`` outside [0, 1).
    StoreValidationError
        The run breaks the schema, or its counts are not counts: NaN, negative, above their
        token totals, or per-sequence counts that do not add up to ``n_active`` and
        ``n_tokens`` (each checked before anything is computed from them).

    References
    ----------
    Benjamini & Hochberg (1995), JRSS B 57; Benjamini & Yekutieli (2001), Annals of Statistics
    29. Cochran (1977), *Sampling Techniques*, ch. 6; Cameron & Miller (2015), J. Human
    Resources 50 (cluster-robust variances). Agresti (2013), *Categorical Data Analysis*,
    3rd ed., sec. 3.1 (two-proportion z-test). Welch (1947), Biometrika 34; Satterthwaite
    (1946), Biometrics Bulletin 2. Kish (1965), *Survey Sampling* (design effect). Wellek
    (2010), *Testing Statistical Hypotheses of Equivalence and Noninferiority*, 2nd ed.
    (interval nulls).
    """
    role_ = check_choice("role", role, get_args(Role))
    method_ = check_choice("method", method, get_args(TestMethod))
    correction_ = check_choice("correction", correction, get_args(Correction))
    alpha_ = check_open_unit("alpha", alpha)
    margin = check_margin(min_effect)
    check_choice("cluster", cluster, get_args(ClusterChoice))
    languages = check_count_run(run, role_, min_languages=2)
    used = method_
    if method_ == "auto":
        used = "cluster" if has_sequences(run) else "binomial"
    deff = check_design_effect(design_effect, used, method_, "binomial")
    if used == "binomial":
        token_level_cluster(run, cluster, used)
    counts = checked_role_sums(run, languages, stored_roles(role_))
    extra: dict[str, Any] = {}
    if used == "cluster":
        stats, extra = _cluster(run, role_, cluster, margin, counts)
    else:
        extra["cluster"] = "token"
        stats = _binomial(counts, languages, stored_roles(role_), margin, deff)
        if deff is not None:
            extra["design_effect"] = deff
    p = stats.pop("p")  # [layer, neuron, language], contiguous: reshape is a view
    p0 = stats.pop("p0", None)
    significant, q = _fdr(p, alpha_, correction_)
    per_language = significant.reshape(-1, len(languages)).sum(axis=0)
    if p0 is None:
        without = significant.sum(axis=(0, 1))
    else:
        without = _fdr(p0, alpha_, correction_)[0].sum(axis=(0, 1))
        del p0
    from scipy import special

    half = _interval_z() * stats["se"] if used == "binomial" else None
    if half is None:
        with np.errstate(invalid="ignore"):
            half = special.stdtrit(stats["df"], 0.5 + _EFFECT_CI / 2.0) * stats["se"]
    dims = (LAYER, NEURON, LANGUAGE)
    data: dict[str, Any] = {
        "p": (dims, p),
        "q": (dims, q),
        "significant": (dims, significant),
        "effect": (dims, stats["effect"]),
        "statistic": (dims, stats["z"]),
        "df": (dims, stats["df"]),
        "se": (dims, stats["se"]),
        "effect_lower": (dims, stats["effect"] - half),
        "effect_upper": (dims, stats["effect"] + half),
        "rate": (dims, stats["rate"]),
        "rate_rest": (dims, stats["rate_rest"]),
    }
    attrs: dict[str, Any] = {
        "method": used,
        "method_requested": method_,
        "role": role_,
        "correction": correction_,
        "alpha": alpha_,
        "alternative": "greater",
        "null": "P[language] - P[other languages pooled] <= min_effect",
        "min_effect": margin,
        "test": _TESTS[used] + (", unpooled variance for the margin" if margin else ""),
        "assumption": _ASSUMPTIONS[used],
        "inference": inference_label(used == "binomial", deff),
        "effect_ci": _EFFECT_CI,
        "n_tests": int(p.size),
        "n_significant": int(significant.sum()),
        "n_significant_per_language": {
            lang: int(c) for lang, c in zip(languages, per_language, strict=True)
        },
        "n_significant_without_margin": int(without.sum()),
        "n_significant_without_margin_per_language": {
            lang: int(c) for lang, c in zip(languages, without, strict=True)
        },
        "cluster_requested": cluster,
        **extra,
    }
    if used == "cluster" and extra["cluster"] == "item":
        attrs["assumption"] = _ITEMS
    if "inference_reason" in extra:
        attrs["inference"] = "descriptive"
    if deff is not None:
        attrs["assumption"] = f"token counts with design effect D={deff:g} (effective n = n / D)"
        attrs["test"] = (
            "conditional binomial tail of the language's count given the neuron's total, on "
            "counts divided by D (1 - pooled P)"
            + (" (at least the margin's z tail, unpooled variance)" if margin else "")
        )
    coords = {LAYER: run[LAYER].values, NEURON: run[NEURON].values, LANGUAGE: languages}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _jaccard(overlap: NDArray[Any], a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """``|A & B| / |A | B|``, 1.0 where both sets are empty."""
    union = a + b - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, overlap / np.maximum(union, 1), 1.0)


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with NaN where ``den`` is 0 (undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def compare_with_identification(tests: xr.Dataset, identification: xr.Dataset) -> xr.Dataset:
    r"""Set the FDR-significant language neurons against an identification rule.

    With :math:`F` the (neuron, language) pairs significant in ``tests`` and :math:`R` those the
    rule assigns (``assigned[layer, neuron, language]``, or ``mask[language, layer, neuron]``):
    :math:`|F|`, :math:`|R|`, :math:`|F \cap R|`, the Jaccard index
    :math:`|F \cap R| / |F \cup R|` (1 when both are empty), the rule's precision
    :math:`|F \cap R| / |R|` and recall :math:`|F \cap R| / |F|` relative to the FDR set (NaN
    where the denominator is 0), per language and over all languages.

    Parameters
    ----------
    tests : xarray.Dataset
        A result of :func:`language_preference_tests`.
    identification : xarray.Dataset
        A result of :func:`langneurons.analysis.identify` (or any Dataset with a boolean
        ``assigned`` or ``mask``) over the same languages, layers and neurons.

    Returns
    -------
    xarray.Dataset
        Per language: ``n_significant``, ``n_rule``, ``overlap`` (int64), ``jaccard``,
        ``precision``, ``recall`` (float64); the same over all languages as scalars with the
        suffix ``_all``. ``attrs``: the tests' ``method``, ``correction``, ``alpha`` and
        ``role``, the rule's ``identification_method`` and ``identification_role``.

    Raises
    ------
    ParameterError
        Either Dataset lacks its variables, or their languages, layers or neurons differ.
    """
    if not isinstance(tests, xr.Dataset) or "significant" not in tests.data_vars:
        raise ParameterError(
            "tests must be a Dataset returned by language_preference_tests() (with significant)"
        )
    if not isinstance(identification, xr.Dataset):
        raise ParameterError(
            f"identification must be an xarray.Dataset, got {type(identification).__name__}"
        )
    if "assigned" in identification.data_vars:
        rule = identification["assigned"]
    elif "mask" in identification.data_vars:
        rule = identification["mask"]
    else:
        raise ParameterError(
            "identification must be a Dataset returned by identify() (with assigned or mask)"
        )
    dims = (LAYER, NEURON, LANGUAGE)
    if set(rule.dims) != set(dims):
        raise ParameterError(
            f"{rule.name} has dims {tuple(rule.dims)}, expected (layer, neuron, language)"
        )
    fdr = tests["significant"].transpose(*dims)
    rule = rule.transpose(*dims)
    for dim in dims:
        a, b = np.asarray(fdr[dim].values), np.asarray(rule[dim].values)
        if dim == LANGUAGE:
            a, b = _as_labels(a), _as_labels(b)
            same = sorted(a.tolist()) == sorted(b.tolist())
        else:
            same = a.shape == b.shape and bool(np.array_equal(a, b))
        if not same:
            raise ParameterError(
                f"tests and identification cover different {dim}s ({a.tolist()[:5]}... vs "
                f"{b.tolist()[:5]}...); compare results of the same run"
            )
    languages = _as_labels(fdr[LANGUAGE])
    rule = rule.assign_coords({LANGUAGE: _as_labels(rule[LANGUAGE])}).sel({LANGUAGE: languages})
    f = np.asarray(fdr.values, dtype=np.bool_)
    r = np.asarray(rule.values, dtype=np.bool_)
    n_f = f.sum(axis=(0, 1)).astype(np.int64)
    n_r = r.sum(axis=(0, 1)).astype(np.int64)
    both = (f & r).sum(axis=(0, 1)).astype(np.int64)
    data: dict[str, Any] = {
        "n_significant": ((LANGUAGE,), n_f),
        "n_rule": ((LANGUAGE,), n_r),
        "overlap": ((LANGUAGE,), both),
        "jaccard": ((LANGUAGE,), _jaccard(both, n_f, n_r)),
        "precision": ((LANGUAGE,), _ratio(both, n_r)),
        "recall": ((LANGUAGE,), _ratio(both, n_f)),
    }
    total = {name: np.int64(v[1].sum()) for name, v in data.items() if v[1].dtype == np.int64}
    data.update({f"{name}_all": ((), value) for name, value in total.items()})
    ov, nf, nr = total["overlap"], total["n_significant"], total["n_rule"]
    data["jaccard_all"] = ((), float(_jaccard(np.asarray(ov), np.asarray(nf), np.asarray(nr))))
    data["precision_all"] = ((), float(_ratio(np.asarray(ov), np.asarray(nr))))
    data["recall_all"] = ((), float(_ratio(np.asarray(ov), np.asarray(nf))))
    attrs: dict[str, Any] = {
        key: tests.attrs[key]
        for key in ("method", "correction", "alpha", "role")
        if key in tests.attrs
    }
    attrs["identification_method"] = str(identification.attrs.get("method", "unknown"))
    attrs["identification_role"] = str(identification.attrs.get("role", "unknown"))
    if attrs.get("role") not in (None, attrs["identification_role"]):
        log.warning(
            "comparing tests on role %r with an identification on role %r",
            attrs.get("role"),
            attrs["identification_role"],
        )
    return xr.Dataset(data, coords={LANGUAGE: languages}, attrs=attrs)


__all__ = ["language_preference_tests", "compare_with_identification", "TestMethod", "Correction"]
