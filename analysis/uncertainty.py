"""Uncertainty of activation probabilities: confidence intervals and standard errors.

The activation probability of neuron ``n`` in layer ``l`` for language ``k`` is the ratio
estimator :math:`\\hat P_{l,n,k} = A_{l,n,k} / T_k` with :math:`A = \\sum_i a_i` (tokens on which
the neuron fired) and :math:`T = \\sum_i t_i` (tokens counted), summed over the sequences ``i`` of
language ``k``. Tokens of one sequence are not independent (topic, register and length are shared),
so the *sequence* is the sampled unit whenever per-sequence counts (``seq_n_active``) exist:

- ``"cluster"``: cluster-robust delta-method (linearisation) variance of a ratio estimator;
- ``"bootstrap"``: percentile intervals from resampling sequences with replacement within
  each language (a stratified cluster bootstrap);
- ``"wilson"``: Wilson score intervals on the token counts, which assume independent tokens
  (the only choice without per-sequence counts).

This module also holds the private helpers the other statistics modules share (the sequence
design, the per-language cluster sums, the chunked reader and the replicate weights).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import special

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_choice as _check_choice
from langneurons.analysis._validate import check_int as _check_int
from langneurons.analysis._validate import check_open_unit as _check_open_unit
from langneurons.errors import ParameterError, StoreValidationError

log = logging.getLogger(__name__)

ProbabilityMethod = Literal["auto", "bootstrap", "cluster", "wilson"]
Role = Literal["response", "prompt", "all"]

LANGUAGE, ROLE, LAYER, NEURON, SEQUENCE = "language", "role", "layer", "neuron", "sequence"
STORED_ROLES: tuple[str, ...] = ("prompt", "response")

#: The ``assumption`` attribute of results that treat every token as an independent draw.
INDEPENDENT_TOKENS = "independent tokens"
#: The ``assumption`` attribute of results that treat sequences as the sampled unit.
INDEPENDENT_SEQUENCES = (
    "independent sequences within each language (tokens of one sequence may be dependent)"
)

# Float32 holds every integer below 2**24 exactly; float64 below 2**53.
EXACT_FLOAT32 = 2**24
EXACT_FLOAT64 = 2**53

_TILE_BYTES = 128 << 20  # raw per-sequence counts read at once
_WORK_BYTES = 32 << 20  # float working set of one matrix product


# --------------------------------------------------------------------------- validation


def _roles(role: str) -> tuple[str, ...]:
    """The stored roles whose counts a ``role`` parameter sums."""
    return STORED_ROLES if role == "all" else (role,)


def _require(run: xr.Dataset, name: str, dims: tuple[str, ...], kinds: str = "iu") -> xr.DataArray:
    """``run[name]`` after checking it exists with these dims and a dtype kind in ``kinds``."""
    expected = f"{name}[{', '.join(dims)}]"
    if name not in run.variables:
        raise StoreValidationError(f"run has no variable {name!r}; expected {expected}")
    var = run[name]
    if set(var.dims) != set(dims):
        raise StoreValidationError(
            f"{name} has dims {tuple(var.dims)}, expected {expected}; the run breaks the schema"
        )
    if var.dtype.kind not in kinds:
        raise StoreValidationError(
            f"{name} has dtype {var.dtype}, expected integer counts; the run breaks the schema"
        )
    return var


def _check_run(run: object, role: str, *, min_languages: int = 1) -> list[str]:
    """Check the per-language counts structurally (no data is read); return the languages."""
    if not isinstance(run, xr.Dataset):
        raise ParameterError(f"run must be an xarray.Dataset, got {type(run).__name__}")
    _require(run, "n_active", (LANGUAGE, ROLE, LAYER, NEURON), "iuf")
    _require(run, "n_tokens", (LANGUAGE, ROLE), "iuf")
    stored = _as_labels(run[ROLE]).tolist()
    for r in _roles(role):
        if r not in stored:
            raise StoreValidationError(
                f"run has no role {r!r} (roles: {stored}); the run breaks the schema"
            )
    languages = _as_labels(run[LANGUAGE]).tolist()
    if len(languages) < min_languages:
        raise ParameterError(
            f"this needs at least {min_languages} languages, the run has {len(languages)}"
        )
    if run.sizes[LAYER] * run.sizes[NEURON] == 0:
        raise ParameterError(
            f"the run has no neurons (layer={run.sizes[LAYER]}, neuron={run.sizes[NEURON]})"
        )
    return languages


def _role_view(var: xr.DataArray, roles: tuple[str, ...]) -> xr.DataArray:
    """``var`` restricted to ``roles`` with basic (slice) indexing, so stores read it fast."""
    stored = _as_labels(var[ROLE]).tolist()
    if sorted(stored) == sorted(roles):
        return var
    i = stored.index(roles[0]) if len(roles) == 1 else -1
    if i < 0:
        return var.sel({ROLE: list(roles)})
    return var.isel({ROLE: slice(i, i + 1)})


def has_sequences(run: xr.Dataset) -> bool:
    """Whether the run carries per-sequence counts (``seq_n_active``)."""
    return "seq_n_active" in run.data_vars


def _missing_sequences(what: str, alternative: str | None) -> ParameterError:
    """The error for a method that needs per-sequence counts on a run without them."""
    fix = "extract with --per-sequence (per-sequence counts make the sequence the sampled unit)"
    if alternative:
        fix += f", or use {alternative} (assumes independent tokens)"
    return ParameterError(
        f"{what} needs per-sequence counts (seq_n_active), which this run lacks; {fix}"
    )


# --------------------------------------------------------------------------- sequence design


@dataclass(frozen=True)
class _Design:
    """Which sequences belong to which language (read from ``seq_language``, no counts read)."""

    languages: list[str]
    roles: tuple[str, ...]
    members: tuple[NDArray[np.intp], ...]  # per language (run order): sorted sequence positions
    language_of: NDArray[np.intp]  # [sequence]: index of its language in run order, -1: unused

    @property
    def n_sequences(self) -> int:
        """Number of sequences in the run (used or not)."""
        return int(self.language_of.size)

    @property
    def counts(self) -> NDArray[np.int64]:
        """Number of sequences of each language."""
        return np.array([m.size for m in self.members], dtype=np.int64)

    def n_per_language(self) -> dict[str, int]:
        """``{language: number of sequences}`` (JSON-serialisable)."""
        return {lang: int(m.size) for lang, m in zip(self.languages, self.members, strict=True)}


def _design(
    run: xr.Dataset, role: str, what: str, alternative: str | None = None, minimum: int = 2
) -> _Design:
    """Validate the per-sequence arrays and group sequences by language."""
    if not has_sequences(run):
        raise _missing_sequences(what, alternative)
    _require(run, "seq_n_active", (SEQUENCE, ROLE, LAYER, NEURON))
    _require(run, "seq_n_tokens", (SEQUENCE, ROLE))
    if "seq_language" not in run.variables or run["seq_language"].dims != (SEQUENCE,):
        raise StoreValidationError(
            "run has seq_n_active but no seq_language[sequence]; the run breaks the schema"
        )
    languages = _as_labels(run[LANGUAGE]).tolist()
    # sequences of languages not in the run (dropped with run.sel(language=...)) are not used
    labels = _as_labels(run["seq_language"])
    members = tuple(np.flatnonzero(labels == lang).astype(np.intp) for lang in languages)
    for lang, m in zip(languages, members, strict=True):
        if m.size < minimum:
            raise ParameterError(
                f"language {lang!r} has {m.size} sequence{'' if m.size == 1 else 's'}; {what} "
                f"needs at least {minimum} per language (sequences are the sampled unit)"
            )
    language_of = np.full(labels.size, -1, dtype=np.intp)
    for k, m in enumerate(members):
        language_of[m] = k
    return _Design(languages, _roles(role), members, language_of)


def _seq_tokens(run: xr.Dataset, design: _Design) -> NDArray[np.int64]:
    """Tokens counted in each sequence for the role (summed over roles for ``"all"``)."""
    tok = _role_view(run["seq_n_tokens"], design.roles).transpose(SEQUENCE, ROLE)
    values = np.asarray(tok.values).astype(np.int64)
    if (values < 0).any():
        raise StoreValidationError(
            "seq_n_tokens holds negative token totals; the store is corrupt — run "
            "`langneurons validate`"
        )
    return values.sum(axis=1)


def _contiguous(idx: NDArray[np.intp]) -> slice | NDArray[np.intp]:
    """A slice when the positions are consecutive (a view instead of a copy)."""
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _cluster_sums(run: xr.Dataset, design: _Design) -> xr.Dataset:
    """Per-language sums over sequences, lazily (dask) for any backing.

    Variables ``A = sum a``, ``S2 = sum a^2``, ``SAT = sum a t`` on ``[language, layer, neuron]``
    and ``T = sum t``, ``STT = sum t^2`` on ``[language]``, all float64. Every term is an integer,
    so the sums are exact (hence independent of chunking) while they stay below 2**53.
    """
    seq = _role_view(run["seq_n_active"], design.roles)
    tok = _role_view(run["seq_n_tokens"], design.roles)
    if not (seq.chunks is not None or (_in_memory(seq) and seq.nbytes <= _TILE_BYTES)):
        # a lazily indexed store array or a large numpy one: stream it through dask
        seq = seq.chunk(_dask_chunks(seq))
        tok = tok.chunk()
    a = seq.astype(np.float64).sum(ROLE)
    t = tok.astype(np.float64).sum(ROLE)
    parts = []
    for members in design.members:
        where = {SEQUENCE: _contiguous(members)}
        ai, ti = a.isel(where), t.isel(where)
        parts.append(
            xr.Dataset(
                {
                    "A": ai.sum(SEQUENCE),
                    "S2": (ai * ai).sum(SEQUENCE),
                    "SAT": (ai * ti).sum(SEQUENCE),
                    "T": ti.sum(SEQUENCE),
                    "STT": (ti * ti).sum(SEQUENCE),
                }
            )
        )
    out = xr.concat(parts, dim=LANGUAGE, coords="minimal", compat="override", join="override")
    out = out.drop_vars([c for c in out.coords if SEQUENCE in out[c].dims])
    return out.assign_coords({LANGUAGE: design.languages})


def _in_memory(var: xr.DataArray) -> bool:
    """Whether ``var`` is a numpy array in memory (not dask, not a lazily read store array)."""
    return var.chunks is None and isinstance(getattr(var.variable, "_data", None), np.ndarray)


def _dask_chunks(var: xr.DataArray) -> dict[str, int]:
    """Dask chunks for a non-dask array: the store's chunks, else about 64 MiB of float64."""
    preferred = var.encoding.get("preferred_chunks")
    if isinstance(preferred, dict) and preferred:
        return {d: int(c) for d, c in preferred.items() if d in var.dims}
    per_sequence = max(1, int(var.size // max(1, var.sizes[SEQUENCE])) * 8)
    return {SEQUENCE: max(1, (64 << 20) // per_sequence)}


# --------------------------------------------------------------------------- chunked reading


def _bounds(var: xr.DataArray, dim: str) -> list[int]:
    """Chunk boundaries along ``dim``: dask chunks, else the store's chunks, else every index."""
    size = int(var.sizes[dim])
    axis = var.get_axis_num(dim)
    if var.chunks is not None:
        sizes = [int(c) for c in var.chunks[axis]]
    else:
        preferred = var.encoding.get("preferred_chunks") or {}
        step = int(preferred.get(dim, 1)) if isinstance(preferred, dict) else 1
        sizes = [min(step, size - i) for i in range(0, size, max(step, 1))]
    return [0, *np.cumsum(sizes, dtype=np.int64).tolist()]


def _groups(bounds: list[int], limit: int) -> list[slice]:
    """Consecutive chunks grouped into slices of at most ``limit`` indices; a chunk longer than
    ``limit`` is split into pieces of ``limit`` (it is then decoded once per piece)."""
    out: list[slice] = []
    start = bounds[0]
    for i in range(1, len(bounds)):
        if bounds[i] - start > limit and bounds[i - 1] > start:
            out.append(slice(start, bounds[i - 1]))
            start = bounds[i - 1]
        while bounds[i] - start > limit:
            out.append(slice(start, start + limit))
            start += limit
    if bounds[-1] > start:
        out.append(slice(start, bounds[-1]))
    return out


class _Reader:
    """Reads ``seq_n_active`` for the role in tiles aligned to its (dask or store) chunks."""

    def __init__(self, run: xr.Dataset, design: _Design) -> None:
        var = _role_view(run["seq_n_active"], design.roles)
        if var.chunks is None and not _in_memory(var):
            # read a store through dask: chunks are fetched and decoded in parallel threads
            var = var.chunk(_dask_chunks(var))
        self.var = var.transpose(SEQUENCE, ROLE, LAYER, NEURON)
        self.n_roles = len(design.roles)
        self.n_layers = int(self.var.sizes[LAYER])
        self.n_neurons = int(self.var.sizes[NEURON])
        self.itemsize = int(self.var.dtype.itemsize)

    def tiles(self, *, all_sequences: bool) -> Iterator[tuple[slice, slice, NDArray[Any]]]:
        """Yield ``(sequences, layers, counts[s, role, l * n])`` tiles of about ``_TILE_BYTES``.

        ``all_sequences=False``: tiles span every layer and as many sequences as fit (each
        stored chunk is read once). ``all_sequences=True``: tiles span every sequence and as
        many layers as fit (what per-cell quantiles over replicates need).
        """
        n_seq = int(self.var.sizes[SEQUENCE])
        per_cell = self.n_roles * self.n_neurons * self.itemsize
        if all_sequences:
            seq_groups = [slice(0, n_seq)]
            limit = max(1, _TILE_BYTES // max(1, per_cell * n_seq))
            layer_groups = _groups(_bounds(self.var, LAYER), limit)
        else:
            layer_groups = [slice(0, self.n_layers)]
            limit = max(1, _TILE_BYTES // max(1, per_cell * self.n_layers))
            seq_groups = _groups(_bounds(self.var, SEQUENCE), limit)
        for layers in layer_groups:
            for seqs in seq_groups:
                block = np.asarray(self.var.isel({SEQUENCE: seqs, LAYER: layers}).values)
                n_l = layers.stop - layers.start
                yield (
                    seqs,
                    layers,
                    block.reshape(block.shape[0], self.n_roles, n_l * self.n_neurons),
                )


def _summed(
    block: NDArray[Any], rows: slice | NDArray[np.intp], cols: slice, dtype: type
) -> NDArray[Any]:
    """Counts of the chosen rows and columns of a tile, summed over its roles, as ``dtype``."""
    out: NDArray[Any] = np.asarray(block[rows, 0, cols], dtype=dtype)
    for r in range(1, block.shape[1]):
        out += block[rows, r, cols]
    return out


def _exact_dtype(largest: int) -> type:
    """float32 when every partial sum of counts stays below 2**24 (exact), else float64."""
    if largest < EXACT_FLOAT32:
        return np.float32
    if largest >= EXACT_FLOAT64:
        log.warning("token totals of %d exceed 2**53; weighted counts may round", largest)
    return np.float64


def _column_step(n_cols: int, rows: int) -> int:
    """Columns per matrix product so that ``rows`` float64 rows stay near ``_WORK_BYTES``."""
    return int(max(1, min(n_cols, _WORK_BYTES // max(1, rows * 8))))


# --------------------------------------------------------------------------- bootstrap weights


def _replicate_seeds(seed: int, n_boot: int) -> list[np.random.SeedSequence]:
    """One independent seed per replicate: ``SeedSequence(seed).spawn(n_boot)``."""
    return np.random.SeedSequence(seed).spawn(n_boot)


def _replicate_weights(
    seeds: Sequence[np.random.SeedSequence], design: _Design
) -> NDArray[np.int64]:
    """Resampling weights ``[replicate, sequence]``: within each language k (in run order),
    ``w ~ Multinomial(n_k; 1/n_k, ..., 1/n_k)``, drawn from the replicate's own generator."""
    weights = np.zeros((len(seeds), design.n_sequences), dtype=np.int64)
    for b, seq in enumerate(seeds):
        rng = np.random.default_rng(seq)
        for members in design.members:
            n = members.size
            weights[b, members] = rng.multinomial(n, np.full(n, 1.0 / n))
    return weights


def _replicate_tokens(
    weights: NDArray[np.int64], tokens: NDArray[np.int64], design: _Design
) -> NDArray[np.int64]:
    """Replicate token totals ``[replicate, language]`` (exact integers)."""
    return np.stack([weights[:, m] @ tokens[m] for m in design.members], axis=1)


# --------------------------------------------------------------------------- estimators


def _wilson(run: xr.Dataset, roles: tuple[str, ...], z: float) -> xr.Dataset:
    """Wilson score interval and binomial standard error on token counts (lazy when dask)."""
    x = run["n_active"].sel({ROLE: list(roles)}).sum(ROLE).astype(np.float64)
    n = run["n_tokens"].sel({ROLE: list(roles)}).sum(ROLE).astype(np.float64)
    p = x / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    se = np.sqrt(p * (1.0 - p) / n)
    lower = np.maximum(center - half, 0.0)
    upper = np.minimum(center + half, 1.0)
    return xr.Dataset({"p": p, "lower": lower, "upper": upper, "se": se})


def _cluster(sums: xr.Dataset, counts: NDArray[np.int64], z: float) -> xr.Dataset:
    """Ratio estimate with the cluster-robust delta-method standard error and normal interval."""
    n = xr.DataArray(counts.astype(np.float64), dims=(LANGUAGE,))
    p = sums["A"] / sums["T"]
    resid = sums["S2"] - 2.0 * p * sums["SAT"] + p * p * sums["STT"]
    var = (n / (n - 1.0)) * np.maximum(resid, 0.0) / (sums["T"] * sums["T"])
    se = np.sqrt(var)
    lower = np.maximum(p - z * se, 0.0)
    upper = np.minimum(p + z * se, 1.0)
    return xr.Dataset({"p": p, "lower": lower, "upper": upper, "se": se})


def _bootstrap(run: xr.Dataset, design: _Design, n_boot: int, seed: int, ci: float) -> xr.Dataset:
    """Percentile intervals from resampling sequences within languages (computes)."""
    tokens = _seq_tokens(run, design)
    weights = _replicate_weights(_replicate_seeds(seed, n_boot), design)
    rep_tokens = _replicate_tokens(weights, tokens, design)
    totals = np.array([tokens[m].sum() for m in design.members], dtype=np.int64)
    dtype = _exact_dtype(int(max(rep_tokens.max(initial=0), totals.max(initial=0))))
    reader = _Reader(run, design)
    k_lang = len(design.languages)
    shape = (k_lang, reader.n_layers * reader.n_neurons)
    out = {name: np.full(shape, np.nan) for name in ("p", "lower", "upper", "se")}
    levels = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]
    for _, layers, block in reader.tiles(all_sequences=True):
        offset = layers.start * reader.n_neurons
        n_cols = block.shape[2]
        for k, members in enumerate(design.members):
            rows = _contiguous(members)
            w: NDArray[Any] = weights[:, members].astype(dtype)
            t_rep = rep_tokens[:, k].astype(np.float64)
            step = _column_step(n_cols, max(n_boot, members.size))
            for c0 in range(0, n_cols, step):
                cols = slice(c0, min(c0 + step, n_cols))
                x = _summed(block, rows, cols, dtype)
                dest = slice(offset + cols.start, offset + cols.stop)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out["p"][k, dest] = x.sum(axis=0, dtype=np.float64) / totals[k]
                    # [cell, replicate], replicates contiguous: reductions over them then do
                    # not depend on how many cells a product holds (same result for any tiling)
                    rep = np.ascontiguousarray((w @ x).T, dtype=np.float64) / t_rep
                quantile = np.nanquantile if np.isnan(rep).any() else np.quantile
                low, high = quantile(rep, levels, axis=1)
                out["lower"][k, dest] = low
                out["upper"][k, dest] = high
                out["se"][k, dest] = np.nanstd(rep, axis=1, ddof=1)
        del block, x, rep  # free this tile before the next one is read
    dims = (LANGUAGE, LAYER, NEURON)
    full = (k_lang, reader.n_layers, reader.n_neurons)
    return xr.Dataset({name: (dims, arr.reshape(full)) for name, arr in out.items()})


_ASSUMPTIONS: dict[str, str] = {
    "wilson": INDEPENDENT_TOKENS,
    "cluster": INDEPENDENT_SEQUENCES + "; normal approximation of the ratio estimator",
    "bootstrap": INDEPENDENT_SEQUENCES + "; percentile bootstrap over sequences",
}
_INTERVALS: dict[str, str] = {
    "wilson": "Wilson score interval on token counts",
    "cluster": "p +- z * se (cluster-robust delta-method se), clipped to [0, 1]",
    "bootstrap": "percentile interval of sequence-resampled ratio estimates",
}


def activation_probability(
    run: xr.Dataset,
    *,
    role: Role = "response",
    method: ProbabilityMethod = "auto",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> xr.Dataset:
    r"""Activation probabilities with confidence intervals and standard errors.

    For language :math:`k` with sequences :math:`i = 1..n_k`, :math:`a_i` tokens on which the
    neuron fired and :math:`t_i` counted tokens, the estimate is the ratio
    :math:`\hat P = A / T` with :math:`A = \sum_i a_i`, :math:`T = \sum_i t_i`.

    - ``"cluster"`` (sequences as clusters): the delta-method (linearisation) variance of a
      ratio estimator,

      .. math:: \widehat{\mathrm{Var}}(\hat P) = \frac{n_k}{n_k - 1}
                \frac{\sum_i (a_i - \hat P t_i)^2}{T^2},

      computed from the exact sums :math:`\sum a^2`, :math:`\sum a t`, :math:`\sum t^2`;
      the interval is :math:`\hat P \pm z_{(1+ci)/2}\, \mathrm{se}` clipped to [0, 1].
    - ``"bootstrap"``: ``n_boot`` replicates resample the :math:`n_k` sequences of each
      language with replacement (weights :math:`w \sim \mathrm{Multinomial}(n_k; 1/n_k)`),
      :math:`\hat P^*_b = \sum_i w_{bi} a_i / \sum_i w_{bi} t_i`; the interval is the
      :math:`(1 \mp ci)/2` percentiles of :math:`\hat P^*`, the ``se`` their standard
      deviation.
    - ``"wilson"`` (independent tokens): with :math:`x = A`, :math:`n = T`,
      :math:`\hat p = x/n`, the score interval
      :math:`\frac{\hat p + z^2/2n}{1 + z^2/n} \pm \frac{z}{1 + z^2/n}
      \sqrt{\hat p(1-\hat p)/n + z^2/4n^2}` and :math:`\mathrm{se} = \sqrt{\hat p(1-\hat p)/n}`.

    Parameters
    ----------
    run : xarray.Dataset
        A run (numpy- or dask-backed; both give identical results).
    role : {"response", "prompt", "all"}
        Which counted tokens to use; ``"all"`` sums both roles (per sequence for the
        per-sequence methods).
    method : {"auto", "bootstrap", "cluster", "wilson"}
        ``"auto"`` is ``"cluster"`` when the run has per-sequence counts, else ``"wilson"``.
    ci : float in (0, 1)
        Confidence level of ``lower`` and ``upper``.
    n_boot : int >= 2
        Bootstrap replicates (``"bootstrap"`` only; recorded for every method).
    seed : int >= 0
        Seed of the bootstrap; replicate ``b`` draws from ``SeedSequence(seed).spawn(n_boot)[b]``.

    Returns
    -------
    xarray.Dataset
        ``p`` (the estimate), ``lower``, ``upper`` and ``se`` on ``[layer, neuron, language]``
        (float64). ``attrs``: ``method`` (the one used), ``method_requested``, ``role``,
        ``ci``, ``n_boot``, ``seed``, ``assumption`` (``"independent tokens"`` for Wilson),
        ``interval`` and, for the per-sequence methods, ``n_sequences`` per language.
        ``"wilson"`` and ``"cluster"`` are lazy on a dask-backed run (nothing is computed
        until the result is); ``"bootstrap"`` computes, streaming the per-sequence counts
        in tiles, and returns numpy-backed arrays. Counts are not checked for corruption
        here (``identify`` and ``langneurons validate`` do); a language without tokens
        gives NaN.

    Raises
    ------
    ParameterError
        A parameter is out of range; ``"bootstrap"``/``"cluster"`` on a run without
        per-sequence counts (extract with ``--per-sequence``); a language with fewer than
        2 sequences.
    StoreValidationError
        The run breaks the schema (missing variables, roles or sequence labels).

    References
    ----------
    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22. Brown, Cai & DasGupta (2001), "Interval estimation for a binomial proportion",
    Statistical Science 16. Cochran (1977), *Sampling Techniques*, 3rd ed., ch. 6 (ratio
    estimators). Cameron & Miller (2015), "A practitioner's guide to cluster-robust
    inference", J. Human Resources 50. Davison & Hinkley (1997), *Bootstrap Methods and
    their Application*, sec. 3.8 (resampling clustered and stratified data).
    """
    role_ = _check_choice("role", role, get_args(Role))
    method_ = _check_choice("method", method, get_args(ProbabilityMethod))
    ci_ = _check_open_unit("ci", ci)
    n_boot_ = _check_int("n_boot", n_boot, 2)
    seed_ = _check_int("seed", seed, 0)
    _check_run(run, role_)
    used = method_
    if method_ == "auto":
        used = "cluster" if has_sequences(run) else "wilson"
    z = float(special.ndtri((1.0 + ci_) / 2.0))
    attrs: dict[str, Any] = {
        "method": used,
        "method_requested": method_,
        "role": role_,
        "ci": ci_,
        "n_boot": n_boot_,
        "seed": seed_,
        "assumption": _ASSUMPTIONS[used],
        "interval": _INTERVALS[used],
    }
    if used == "wilson":
        out = _wilson(run, _roles(role_), z)
    else:
        design = _design(run, role_, f"method={used!r}", "method='wilson'")
        attrs["n_sequences"] = design.n_per_language()
        if used == "cluster":
            lazy = run["seq_n_active"].chunks is not None
            out = _cluster(_cluster_sums(run, design), design.counts, z)
            if not lazy:
                out = out.compute()
        else:
            out = _bootstrap(run, design, n_boot_, seed_, ci_)
    out = out.assign_coords(
        {LANGUAGE: _as_labels(run[LANGUAGE]), LAYER: run[LAYER].values, NEURON: run[NEURON].values}
    )
    out = out.transpose(LAYER, NEURON, LANGUAGE)
    out.attrs = attrs
    return out


__all__ = [
    "activation_probability",
    "has_sequences",
    "ProbabilityMethod",
    "Role",
    "INDEPENDENT_TOKENS",
    "INDEPENDENT_SEQUENCES",
]
