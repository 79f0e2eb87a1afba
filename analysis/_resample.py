"""The one sequence-resampling engine of the analysis room.

Every bootstrap over a run's sequences goes through here: the bootstrap of an identification
(:mod:`~langneurons.analysis.stability`), of stage boundaries, of type and shared-by changes and
of spontaneous alignment (two runs), through :mod:`~langneurons.analysis.bootstrap`, which
re-runs the identification on the replicates this module builds, and the percentile intervals
of activation probabilities (:mod:`~langneurons.analysis.uncertainty`).

- **One design**: which sequences belong to which language, read from ``seq_language``
  (:func:`design`), and what is drawn (:class:`Units`): sequences within each language
  (``cluster="sequence"``, a stratified cluster bootstrap) or items (``cluster="item"``:
  every sequence sharing a ``seq_id`` is drawn together, in every language at once).
- **One random stream per seed**: replicate ``b`` draws from its own generator
  ``default_rng(SeedSequence(seed).spawn(n_boot)[b])``, first the weights of the first run,
  then (two independent runs) those of the second; a paired draw gives both runs the same
  weights on the units they share. Replicates therefore do not depend on how they are blocked.
- **One policy on inconsistent totals**: per-sequence counts that do not add up to the run's
  ``n_tokens`` / ``n_active`` are a :class:`~langneurons.errors.StoreValidationError` naming the
  run and ``langneurons validate``.
- **One streaming pass**: replicate counts are weighted sums over ``seq_n_active`` read in tiles
  aligned to its (dask or store) chunks, in exact integer arithmetic (float32 while every sum
  stays below 2**24, float64 otherwise). The per-language cluster sums of the tests and the
  cluster intervals come from the same reader in one pass (:func:`streamed_sums`); the lazy
  graph of them (:func:`cluster_sums`) is kept for results that stay lazy on dask-backed runs.

Why this module is long: it is that one engine, design, units, random stream, streaming reader,
the replicate products (with the role-summed counts kept between blocks) and the cluster sums
over the same reader, and every bootstrap and test depends on all of them agreeing; split, the
sequence layout, the random stream and the exactness policy would each live in two places.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import (
    as_labels,
    check_choice,
    require_variable,
    run_languages,
    stored_roles,
)
from langneurons.errors import ParameterError, StoreValidationError
from langneurons.names import (
    LANGUAGE,
    LAYER,
    NEURON,
    ROLE,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_TOKENS,
    SEQUENCE,
)

log = logging.getLogger(__name__)

Cluster = Literal["sequence", "item"]
CLUSTERS: tuple[str, ...] = ("sequence", "item")

# Float32 holds every integer below 2**24 exactly; float64 below 2**53.
EXACT_FLOAT32 = 2**24
EXACT_FLOAT64 = 2**53

TILE_BYTES = 128 << 20  # raw per-sequence counts read at once
#: Per-sequence counts up to this size stay in memory after a first full pass (later bootstrap
#: blocks read no store); larger ones are read again each block. Bounded by this, never by B.
CACHE_BYTES = 512 << 20
WORK_BYTES = 32 << 20  # float working set of one matrix product
#: float working set of one block of the cluster sums: small enough to stay in cache between
#: its product and its squares (5-7x less CPU than 32 MiB blocks on 2,000 x 65,536 counts)
SUMS_WORK_BYTES = 2 << 20

_CORRUPT = "the store is corrupt — run `langneurons validate`"


def resampling_note(cluster: str, paired: bool = False) -> str:
    """The ``resampling`` attribute of a result: what was drawn, and from which stream."""
    unit = (
        "sequences with replacement within each language"
        if cluster == "sequence"
        else "items (seq_id, all their sequences in every language) with replacement"
    )
    runs = "; both runs drawn together (paired)" if paired else ""
    return f"{unit} (multinomial weights; SeedSequence(seed).spawn(n_boot) per replicate){runs}"


# --------------------------------------------------------------------------- design


def has_sequences(run: xr.Dataset) -> bool:
    """Whether the run carries per-sequence counts (``seq_n_active``)."""
    return SEQ_N_ACTIVE in run.data_vars


def missing_sequences(what: str, fix: str, name: str = "run") -> ParameterError:
    """The error for an analysis that needs per-sequence counts on a run without them."""
    who = "this run" if name == "run" else name
    return ParameterError(
        f"{what} needs per-sequence counts (seq_n_active), which {who} lacks; {fix}"
    )


#: The fix of :func:`missing_sequences` for the bootstraps (which have point estimates).
FIX_BOOTSTRAP = (
    "extract with --per-sequence (create_run(..., sequences=True)) or pass n_boot=0 for point "
    "estimates only"
)


@dataclass(frozen=True)
class Design:
    """Which sequences belong to which language (read from ``seq_language``, no counts read)."""

    name: str
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


def design(
    run: xr.Dataset,
    role: str,
    what: str,
    *,
    fix: str = "extract with --per-sequence (per-sequence counts make the sequence the sampled "
    "unit)",
    name: str = "run",
    minimum: int = 2,
) -> Design:
    """Validate the per-sequence arrays of ``run`` and group its sequences by language."""
    if not has_sequences(run):
        raise missing_sequences(what, fix, name)
    require_variable(run, SEQ_N_ACTIVE, (SEQUENCE, ROLE, LAYER, NEURON), "iu")
    require_variable(run, SEQ_N_TOKENS, (SEQUENCE, ROLE), "iu")
    if SEQ_LANGUAGE not in run.variables or run[SEQ_LANGUAGE].dims != (SEQUENCE,):
        raise StoreValidationError(
            "run has seq_n_active but no seq_language[sequence]; the run breaks the schema"
        )
    languages = run_languages(run)
    # sequences of languages not in the run (dropped with run.sel(language=...)) are not used
    labels = as_labels(run[SEQ_LANGUAGE])
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
    return Design(name, languages, stored_roles(role), members, language_of)


def role_view(var: xr.DataArray, roles: tuple[str, ...]) -> xr.DataArray:
    """``var`` restricted to ``roles`` with basic (slice) indexing, so stores read it fast."""
    stored = as_labels(var[ROLE]).tolist()
    if sorted(stored) == sorted(roles):
        return var
    i = stored.index(roles[0]) if len(roles) == 1 else -1
    if i < 0:
        return var.sel({ROLE: list(roles)})
    return var.isel({ROLE: slice(i, i + 1)})


def seq_tokens(run: xr.Dataset, d: Design) -> NDArray[np.int64]:
    """Tokens counted in each sequence for the role (summed over roles for ``"all"``)."""
    tok = role_view(run[SEQ_N_TOKENS], d.roles).transpose(SEQUENCE, ROLE)
    values = np.asarray(tok.values).astype(np.int64)
    if (values < 0).any():
        raise StoreValidationError(f"seq_n_tokens holds negative token totals; {_CORRUPT}")
    return values.sum(axis=1)


def contiguous(idx: NDArray[np.intp]) -> slice | NDArray[np.intp]:
    """A slice when the positions are consecutive (a view instead of a copy)."""
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def in_memory(var: xr.DataArray) -> bool:
    """Whether ``var`` is a numpy array in memory (not dask, not a lazily read store array)."""
    return var.chunks is None and isinstance(getattr(var.variable, "_data", None), np.ndarray)


def dask_chunks(var: xr.DataArray) -> dict[str, int]:
    """Dask chunks for a non-dask array: the store's chunks, else about 64 MiB of float64."""
    preferred = var.encoding.get("preferred_chunks")
    if isinstance(preferred, dict) and preferred:
        return {d: int(c) for d, c in preferred.items() if d in var.dims}
    per_sequence = max(1, int(var.size // max(1, var.sizes[SEQUENCE])) * 8)
    return {SEQUENCE: max(1, (64 << 20) // per_sequence)}


def cluster_sums(run: xr.Dataset, d: Design) -> xr.Dataset:
    """Per-language sums over sequences, lazily (dask) for any backing.

    Variables ``A = sum a``, ``S2 = sum a^2``, ``SAT = sum a t`` on ``[language, layer, neuron]``
    and ``T = sum t``, ``STT = sum t^2`` on ``[language]``, all float64. Every term is an integer,
    so the sums are exact (hence independent of chunking) while they stay below 2**53.
    """
    a, t = _per_sequence(run, d)
    parts = []
    for members in d.members:
        where = {SEQUENCE: contiguous(members)}
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
    return out.assign_coords({LANGUAGE: d.languages})


def repeated_items(run: xr.Dataset, d: Design) -> bool:
    """Whether some item (``seq_id``) has more than one sequence in one language."""
    ids = _seq_ids(run, d, required=False)
    if ids is None:
        return False
    return any(np.unique(ids[m]).size < m.size for m in d.members)


def choose_cluster(run: xr.Dataset, d: Design, cluster: str) -> str:
    """The unit of replication of the per-sequence intervals and tests.

    ``"auto"``: the item whenever an item has more than one sequence in a language, else the
    sequence. ``"item"`` on a run without ``seq_id`` is a :class:`ParameterError`.
    """
    check_choice("cluster", cluster, ("auto", *CLUSTERS))
    if cluster == "auto":
        return "item" if repeated_items(run, d) else "sequence"
    if cluster == "item" and _seq_ids(run, d, required=False) is None:
        raise ParameterError(
            f"cluster='item' needs item ids (seq_id[sequence]), which {d.name} lacks; extract "
            "with --per-sequence and item ids, or use cluster='sequence' (or 'auto')"
        )
    return cluster


def item_sums(run: xr.Dataset, d: Design) -> tuple[xr.Dataset, NDArray[np.int64]]:
    """:func:`cluster_sums` over items instead of sequences, and the item count per language.

    The sequences of one item in one language (same ``seq_id``) are added up first, so
    ``a``, ``t`` are item totals; items are clusters within each language (stratum).
    """
    groups = item_groups(run, d)
    a, t = _per_sequence(run, d)
    parts: list[xr.Dataset] = []
    for members, group in zip(d.members, groups, strict=True):
        onehot = xr.DataArray(group, dims=("item", SEQUENCE))
        where = {SEQUENCE: contiguous(members)}
        ai = xr.dot(onehot, a.isel(where).drop_vars(list(a.coords), errors="ignore"), dim=SEQUENCE)
        ti = xr.dot(onehot, t.isel(where).drop_vars(list(t.coords), errors="ignore"), dim=SEQUENCE)
        parts.append(
            xr.Dataset(
                {
                    "A": ai.sum("item"),
                    "S2": (ai * ai).sum("item"),
                    "SAT": (ai * ti).sum("item"),
                    "T": ti.sum("item"),
                    "STT": (ti * ti).sum("item"),
                }
            )
        )
    out = xr.concat(parts, dim=LANGUAGE, coords="minimal", compat="override", join="override")
    out = out.assign_coords({LAYER: run[LAYER].values, NEURON: run[NEURON].values})
    counts = np.array([g.shape[0] for g in groups], dtype=np.int64)
    return out.assign_coords({LANGUAGE: d.languages}), counts


def item_groups(run: xr.Dataset, d: Design) -> list[NDArray[np.float64]]:
    """Per language, its items' one-hot membership ``[item, sequence of the language]``
    (float64 0/1; items sorted by ``seq_id``); fewer than 2 items is a ParameterError."""
    ids = _seq_ids(run, d, required=True)
    assert ids is not None
    out = []
    for lang, members in zip(d.languages, d.members, strict=True):
        labels, inverse = np.unique(ids[members], return_inverse=True)
        if labels.size < 2:
            raise ParameterError(
                f"language {lang!r} has {labels.size} item (seq_id); clustering on items needs "
                "at least 2 per language; use cluster='sequence'"
            )
        out.append((np.arange(labels.size)[:, None] == inverse[None, :]).astype(np.float64))
    return out


def _per_sequence(run: xr.Dataset, d: Design) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-sequence counts ``a`` and tokens ``t`` of the role as float64 (dask when large)."""
    seq = role_view(run[SEQ_N_ACTIVE], d.roles)
    tok = role_view(run[SEQ_N_TOKENS], d.roles)
    if not (seq.chunks is not None or (in_memory(seq) and seq.nbytes <= TILE_BYTES)):
        # a lazily indexed store array or a large numpy one: stream it through dask
        seq = seq.chunk(dask_chunks(seq))
        tok = tok.chunk()
    # without the counts' attrs (units, long_name), which are not those of the sums
    a, t = seq.astype(np.float64).sum(ROLE), tok.astype(np.float64).sum(ROLE)
    return a.drop_attrs(), t.drop_attrs()


# --------------------------------------------------------------------------- what is drawn


@dataclass(frozen=True)
class Units:
    """The sampled units of a run: strata of units, and the unit of every used sequence.

    A replicate draws, in each stratum of ``n`` units, ``Multinomial(n; 1/n, ..., 1/n)`` unit
    weights; a sequence weighs what its unit weighs (0 when unused).
    """

    cluster: str
    keys: tuple[tuple[str, str], ...]  # per unit: (language or "", seq_id or position)
    strata: tuple[int, ...]  # unit count of each stratum, in draw order
    unit_of: NDArray[np.intp]  # [sequence] -> unit index, -1: unused

    def draw(self, rng: np.random.Generator) -> NDArray[np.int64]:
        """One replicate's unit weights, stratum by stratum from ``rng``."""
        return np.concatenate(
            [rng.multinomial(n, np.full(n, 1.0 / n)) for n in self.strata]
        ).astype(np.int64)

    def onto(self, other: Units, names: tuple[str, str]) -> Units:
        """These sequences' units as indices into ``other``'s (for a paired draw)."""
        index = {key: i for i, key in enumerate(other.keys)}
        mine = set(self.keys)
        only_other = [k[1] for k in other.keys if k not in mine][:3]
        only_mine = [k[1] for k in self.keys if k not in index][:3]
        if only_other or only_mine:
            raise ParameterError(
                f"{names[1]} and {names[0]} must hold the same {self.cluster}s to be resampled "
                f"together (paired); only in {names[0]}: {only_other}, only in {names[1]}: "
                f"{only_mine}; pass paired=False"
            )
        remap = np.array([index[k] for k in self.keys], dtype=np.intp)
        unit_of = np.where(self.unit_of >= 0, remap[np.maximum(self.unit_of, 0)], -1)
        return Units(self.cluster, other.keys, other.strata, unit_of.astype(np.intp))


def units(run: xr.Dataset, d: Design, cluster: str) -> Units:
    """The sampled units of ``run``: its sequences per language, or its items (``seq_id``)."""
    check_choice("cluster", cluster, CLUSTERS)
    if cluster == "sequence":
        ids = _seq_ids(run, d, required=False)
        order = np.concatenate(d.members) if d.members else np.zeros(0, dtype=np.intp)
        unit_of = np.full(d.n_sequences, -1, dtype=np.intp)
        unit_of[order] = np.arange(order.size)
        keys = tuple(
            (d.languages[int(d.language_of[i])], ids[i] if ids is not None else str(i))
            for i in order
        )
        return Units(cluster, keys, tuple(int(m.size) for m in d.members), unit_of)
    ids = _seq_ids(run, d, required=True)
    assert ids is not None
    used = d.language_of >= 0
    items, inverse = np.unique(ids[used], return_inverse=True)
    unit_of = np.full(d.n_sequences, -1, dtype=np.intp)
    unit_of[used] = inverse
    return Units(cluster, tuple(("", str(x)) for x in items), (int(items.size),), unit_of)


def _seq_ids(run: xr.Dataset, d: Design, *, required: bool) -> NDArray[np.str_] | None:
    """``seq_id`` per sequence, or None when the run has none and they are not required."""
    if SEQ_ID not in run.variables or run[SEQ_ID].dims != (SEQUENCE,):
        if required:
            raise ParameterError(
                f"{d.name} has no seq_id[sequence], so its items cannot be resampled; "
                "use cluster='sequence'"
            )
        return None
    return as_labels(run[SEQ_ID])


def replicate_seeds(seed: int, n_boot: int) -> list[np.random.SeedSequence]:
    """One independent seed per replicate: ``SeedSequence(seed).spawn(n_boot)``."""
    return np.random.SeedSequence(seed).spawn(n_boot)


def draw_weights(
    plans: Sequence[Units], seeds: Sequence[np.random.SeedSequence], *, paired: bool = False
) -> list[NDArray[np.int64]]:
    """Sequence weights ``[replicate, sequence]`` of each run, from one generator per replicate.

    Unpaired, run ``r`` draws after runs ``0..r-1`` from replicate ``b``'s generator, so the
    first run's weights are those it gets alone. Paired, one draw is shared: ``plans[1:]`` must
    be mapped onto ``plans[0]``'s units (:meth:`Units.onto`).
    """
    out = [np.zeros((len(seeds), p.unit_of.size), dtype=np.int64) for p in plans]
    for b, seq in enumerate(seeds):
        rng = np.random.default_rng(seq)
        shared = plans[0].draw(rng) if paired else None
        for plan, weights in zip(plans, out, strict=True):
            unit_w = shared if shared is not None else plan.draw(rng)
            used = plan.unit_of >= 0
            weights[b, used] = unit_w[plan.unit_of[used]]
    return out


def draw_swaps(
    plans: Sequence[Units], seeds: Sequence[np.random.SeedSequence]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Weights of a label-swap permutation of two paired runs, from one generator per replicate.

    Each unit of ``plans[0]`` is swapped with probability 1/2 (``f = 1``): the pseudo first run
    holds the first run's sequences of the kept units (weights ``1 - f``) and the second run's
    sequences of the swapped ones (weights ``f``); ``plans[1]`` must be mapped onto
    ``plans[0]``'s units (:meth:`Units.onto`). Returns both weight matrices
    ``[replicate, sequence]``; the pseudo second run is everything else.
    """
    first, second = plans
    n_units = int(sum(first.strata))
    out = (
        np.zeros((len(seeds), first.unit_of.size), dtype=np.int64),
        np.zeros((len(seeds), second.unit_of.size), dtype=np.int64),
    )
    used = (first.unit_of >= 0, second.unit_of >= 0)
    for b, seq in enumerate(seeds):
        flip = np.random.default_rng(seq).integers(0, 2, size=n_units)
        out[0][b, used[0]] = 1 - flip[first.unit_of[used[0]]]
        out[1][b, used[1]] = flip[second.unit_of[used[1]]]
    return out


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


def scheduler_elsewhere() -> bool:
    """Whether the active Dask scheduler runs tasks outside this process's threads (a
    distributed client, processes, a custom one); not for the default threaded or sync one."""
    import dask.base
    import dask.local
    import dask.threaded

    get = dask.base.get_scheduler()
    return get is not None and get not in (dask.threaded.get, dask.local.get_sync)


class Reader:
    """Reads ``seq_n_active`` for the role in tiles aligned to its (dask or store) chunks.

    A store-backed run is read through zarr in this process (its chunks fetched and decoded
    concurrently; 3-4x faster than through a dask graph here), unless the active scheduler runs
    elsewhere (a cluster), whose workers then read it; a dask-backed run is read with one
    compute per tile.
    """

    def __init__(self, run: xr.Dataset, d: Design) -> None:
        var = role_view(run[SEQ_N_ACTIVE], d.roles)
        if var.chunks is None and not in_memory(var) and scheduler_elsewhere():
            # a store-backed run under a cluster: its workers fetch and decode the chunks
            var = var.chunk(dask_chunks(var))
        self.var = var.transpose(SEQUENCE, ROLE, LAYER, NEURON)
        self.n_roles = len(d.roles)
        self.n_layers = int(self.var.sizes[LAYER])
        self.n_neurons = int(self.var.sizes[NEURON])
        self.itemsize = int(self.var.dtype.itemsize)
        self._cached: list[tuple[slice, slice, NDArray[Any]]] | None = None
        size = int(np.prod([int(v) for v in self.var.sizes.values()])) * self.itemsize
        self._cacheable = size <= CACHE_BYTES and not in_memory(self.var)

    def tiles(self, *, all_sequences: bool) -> Iterator[tuple[slice, slice, NDArray[Any]]]:
        """Yield ``(sequences, layers, counts[s, role, l * n])`` tiles of about ``TILE_BYTES``.

        ``all_sequences=False``: tiles span every layer and as many sequences as fit (each
        stored chunk is read once). ``all_sequences=True``: tiles span every sequence and as
        many layers as fit (what per-cell quantiles over replicates need).
        """
        if not all_sequences and self._cacheable:  # read once, then reused from memory
            if self._cached is None:
                self._cached = list(self._read_tiles(all_sequences=False))
            yield from self._cached
            return
        yield from self._read_tiles(all_sequences=all_sequences)

    def _read_tiles(self, *, all_sequences: bool) -> Iterator[tuple[slice, slice, NDArray[Any]]]:
        """:meth:`tiles`, read from the variable."""
        n_seq = int(self.var.sizes[SEQUENCE])
        per_cell = self.n_roles * self.n_neurons * self.itemsize
        if all_sequences:
            seq_groups = [slice(0, n_seq)]
            limit = max(1, TILE_BYTES // max(1, per_cell * n_seq))
            layer_groups = _groups(_bounds(self.var, LAYER), limit)
        else:
            layer_groups = [slice(0, self.n_layers)]
            limit = max(1, TILE_BYTES // max(1, per_cell * self.n_layers))
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


def summed(
    block: NDArray[Any], rows: slice | NDArray[np.intp], cols: slice, dtype: type
) -> NDArray[Any]:
    """Counts of the chosen rows and columns of a tile, summed over its roles, as ``dtype``."""
    out: NDArray[Any] = np.asarray(block[rows, 0, cols], dtype=dtype)
    for r in range(1, block.shape[1]):
        out += block[rows, r, cols]
    return out


def exact_dtype(largest: int) -> type:
    """float32 when every partial sum of counts stays below 2**24 (exact), else float64."""
    if largest < EXACT_FLOAT32:
        return np.float32
    if largest >= EXACT_FLOAT64:
        log.warning("token totals of %d exceed 2**53; weighted counts may round", largest)
    return np.float64


def column_step(n_cols: int, rows: int, work: int | None = None) -> int:
    """Columns per matrix product so that ``rows`` float64 rows stay near ``work`` bytes
    (default ``WORK_BYTES``)."""
    work = WORK_BYTES if work is None else work
    return int(max(1, min(n_cols, work // max(1, rows * 8))))


class LanguageSums(NamedTuple):
    """One language's cluster sums (rows of :func:`streamed_sums`), final once reported."""

    language: int  # its position in run order
    A: NDArray[np.float64]  # [cell]
    S2: NDArray[np.float64]  # [cell]
    SAT: NDArray[np.float64]  # [cell]
    T: float
    STT: float
    n: int  # clusters (sequences or items)


def streamed_sums(
    run: xr.Dataset,
    d: Design,
    cluster: str,
    on_language: Callable[[LanguageSums], object] | None = None,
) -> tuple[xr.Dataset, NDArray[np.int64]]:
    """:func:`cluster_sums` (``cluster="sequence"``) or :func:`item_sums` (``"item"``), computed
    in one pass of the :class:`Reader` instead of a lazy graph; numpy-backed, identical values.

    Sequences are read in chunk-aligned tiles (each stored chunk once, one dask compute per
    tile of about ``TILE_BYTES``); items need every sequence of an item together, so they are
    read in tiles of all sequences and some layers. Per tile and language, ``A`` and ``SAT``
    are one BLAS product of ``[1, t]`` with the counts, ``S2`` a row-wise dot; every term is
    an integer in float64, so the sums equal the lazy ones exactly (below 2**53).

    ``on_language`` is called with each language's sums as soon as they are final (sequences
    of a language stored together: after the tile holding its last one; items: at the end),
    so a caller can work on one language while the next is read.
    """
    groups = item_groups(run, d) if cluster == "item" else None
    reader = Reader(run, d)
    k, n_neurons = len(d.languages), reader.n_neurons
    tokens = seq_tokens(run, d).astype(np.float64)
    # per language: weights [unit, sequence of the language]; None: the identity (sequences)
    weights = groups if groups is not None else [None] * k
    unit_t = [
        tokens[m] if w is None else w @ tokens[m] for m, w in zip(d.members, weights, strict=True)
    ]
    cells = reader.n_layers * n_neurons
    a_sum, s2_sum, sat_sum = (np.zeros((k, cells)) for _ in range(3))
    last = [int(m[-1]) if m.size else -1 for m in d.members]
    reported = [False] * k

    def report(done: int) -> None:  # languages whose last sequence is below ``done``
        for j in range(k):
            if on_language is not None and not reported[j] and last[j] < done:
                reported[j] = True
                t = unit_t[j]
                on_language(
                    LanguageSums(j, a_sum[j], s2_sum[j], sat_sum[j], t.sum(), (t * t).sum(), t.size)
                )

    for seqs, layers, block in reader._read_tiles(all_sequences=groups is not None):
        n_cols = block.shape[2]
        local = d.language_of[seqs]
        for j in np.unique(local[local >= 0]):
            rows = np.flatnonzero(local == j).astype(np.intp)
            first = int(np.searchsorted(d.members[j], seqs.start + rows[0]))
            t = unit_t[j] if groups is not None else unit_t[j][first : first + rows.size]
            ones_t = np.stack([np.ones_like(t), t])
            step = column_step(n_cols, max(rows.size, t.size), min(WORK_BYTES, SUMS_WORK_BYTES))
            for c0 in range(0, n_cols, step):
                cols = slice(c0, min(c0 + step, n_cols))
                x = summed(block, contiguous(rows), cols, np.float64)
                if groups is not None:
                    x = groups[j] @ x  # item totals
                out = slice(
                    layers.start * n_neurons + cols.start, layers.start * n_neurons + cols.stop
                )
                both = ones_t @ x
                a_sum[j, out] += both[0]
                sat_sum[j, out] += both[1]
                s2_sum[j, out] += np.einsum("ij,ij->j", x, x)
        del block
        if groups is None:  # every layer of these sequences read
            report(seqs.stop)
    report(d.n_sequences + 1)
    shape = (k, reader.n_layers, n_neurons)
    cube = (LANGUAGE, LAYER, NEURON)
    out_ds = xr.Dataset(
        {
            "A": (cube, a_sum.reshape(shape)),
            "S2": (cube, s2_sum.reshape(shape)),
            "SAT": (cube, sat_sum.reshape(shape)),
            "T": ((LANGUAGE,), np.array([t.sum() for t in unit_t])),
            "STT": ((LANGUAGE,), np.array([(t * t).sum() for t in unit_t])),
        },
        coords={LANGUAGE: d.languages, LAYER: run[LAYER].values, NEURON: run[NEURON].values},
    )
    n_units = np.array([t.size for t in unit_t], dtype=np.int64)
    return out_ds, n_units


# --------------------------------------------------------------------------- one run


class Resampler:
    """One run's sequences, ready to be resampled: design, units, token totals and a reader.

    Checks on construction that the per-sequence token totals add up to ``n_tokens``; the
    counts themselves are checked against ``n_active`` by :meth:`check_active`.
    """

    def __init__(
        self,
        run: xr.Dataset,
        role: str,
        what: str,
        *,
        name: str = "run",
        fix: str = FIX_BOOTSTRAP,
        minimum: int = 2,
        cluster: str = "sequence",
    ) -> None:
        self.run = run
        self.design = design(run, role, what, fix=fix, name=name, minimum=minimum)
        self.units = units(run, self.design, cluster)
        self.tokens = seq_tokens(run, self.design)
        self.reader = Reader(run, self.design)
        self._kept: tuple[np.dtype[Any], list[NDArray[Any]]] | None = None
        self.totals = np.array([self.tokens[m].sum() for m in self.design.members], np.int64)
        stored = run["n_tokens"].sel({ROLE: list(self.design.roles)}).sum(ROLE).values
        stored = np.asarray(stored, dtype=np.int64)
        bad = np.flatnonzero(stored != self.totals)
        if bad.size:
            i = int(bad[0])
            raise StoreValidationError(
                f"{name}: seq_n_tokens of language {self.design.languages[i]!r} sum to "
                f"{int(self.totals[i])} but n_tokens holds {int(stored[i])}; {_CORRUPT}"
            )

    @property
    def n_cells(self) -> int:
        """Neurons of the run (layers x neurons)."""
        return self.reader.n_layers * self.reader.n_neurons

    def replicate_tokens(self, weights: NDArray[np.int64]) -> NDArray[np.int64]:
        """Replicate token totals ``[replicate, language]`` (exact integers)."""
        return np.stack([weights[:, m] @ self.tokens[m] for m in self.design.members], axis=1)

    def replicate_counts(self, weights: NDArray[Any], dtype: type) -> NDArray[Any]:
        """Weighted counts ``[replicate, language, layer * neuron]``: ``sum_i w_bi a_i``.

        Each language's sequences contribute ``W[:, rows] @ counts[rows]`` (a BLAS product on
        exact integers, written in place: the result is a view of ``[language, replicate,
        cell]``). The role-summed counts of every language are kept as ``dtype`` after the
        first call while they fit in ``CACHE_BYTES`` (one product per language and block);
        larger ones are streamed from ``seq_n_active`` in chunk-aligned tiles on every call.
        """
        reader, d = self.reader, self.design
        n_rep = weights.shape[0]
        out: NDArray[Any] = np.zeros((len(d.languages), n_rep, self.n_cells), dtype=dtype)
        kept = self._language_counts(dtype)
        if kept is not None:
            for k, (members, x) in enumerate(zip(d.members, kept, strict=True)):
                if members.size:
                    np.matmul(weights[:, members].astype(dtype), x, out=out[k])
            return out.transpose(1, 0, 2)
        for seqs, layers, block in reader.tiles(all_sequences=False):
            offset = layers.start * reader.n_neurons
            n_cols = block.shape[2]
            local = d.language_of[seqs]
            for k in np.unique(local[local >= 0]):
                rows = np.flatnonzero(local == k).astype(np.intp)
                w: NDArray[Any] = weights[:, seqs.start + rows].astype(dtype)
                tile_rows = contiguous(rows)
                step = column_step(n_cols, max(n_rep, rows.size))
                for c0 in range(0, n_cols, step):
                    cols = slice(c0, min(c0 + step, n_cols))
                    x = summed(block, tile_rows, cols, dtype)
                    out[k, :, offset + cols.start : offset + cols.stop] += w @ x
            del block  # free this tile before the next one is read
        return out.transpose(1, 0, 2)

    def _language_counts(self, dtype: type) -> list[NDArray[Any]] | None:
        """Each language's role-summed counts ``[its sequences, cells]`` as ``dtype``, read
        in one pass and kept (None when they would exceed ``CACHE_BYTES``: stream instead)."""
        want = np.dtype(dtype)
        if self._kept is not None and self._kept[0] == want:
            return self._kept[1]
        d = self.design
        if sum(m.size for m in d.members) * self.n_cells * want.itemsize > CACHE_BYTES:
            return None
        self._kept = None  # another dtype's copy goes before this one is built
        kept = [np.empty((m.size, self.n_cells), dtype=want) for m in d.members]
        # straight from the variable: the raw tiles are not kept beside their sums
        for seqs, _, block in self.reader._read_tiles(all_sequences=False):
            local = d.language_of[seqs]
            for k in np.unique(local[local >= 0]):
                rows = np.flatnonzero(local == k).astype(np.intp)
                at = np.searchsorted(d.members[k], seqs.start + rows)
                kept[k][at] = summed(block, contiguous(rows), slice(None), want.type)
            del block
        self._kept = (want, kept)
        return kept

    def check_active(self, totals: NDArray[Any]) -> None:
        """StoreValidationError when the summed per-sequence counts ``[language, cells]``
        disagree with ``n_active``."""
        stored = self.run["n_active"].sel({ROLE: list(self.design.roles)}).sum(ROLE)
        stored_v = np.asarray(stored.transpose(LANGUAGE, LAYER, NEURON).values)
        stored_v = stored_v.reshape(len(self.design.languages), -1)
        bad = np.flatnonzero((stored_v != totals).any(axis=1))
        if bad.size:
            lang = self.design.languages[int(bad[0])]
            raise StoreValidationError(
                f"{self.design.name}: seq_n_active of language {lang!r} does not sum to "
                f"n_active; {_CORRUPT}"
            )

    def replicate(self, counts: NDArray[Any], tokens: NDArray[np.int64]) -> xr.Dataset:
        """A run Dataset of one replicate's counts (one role, "response": the roles summed)."""
        reader = self.reader
        k = len(self.design.languages)
        return xr.Dataset(
            {
                "n_active": (
                    (LANGUAGE, ROLE, LAYER, NEURON),
                    counts.reshape(k, 1, reader.n_layers, reader.n_neurons),
                ),
                "n_tokens": ((LANGUAGE, ROLE), tokens[:, None]),
            },
            coords={
                LANGUAGE: self.design.languages,
                ROLE: ["response"],
                LAYER: reader.var[LAYER].values,
                NEURON: reader.var[NEURON].values,
            },
        )
