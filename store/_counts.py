"""In-memory additive counts: what extraction and importers hand to the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from langneurons.errors import StoreValidationError
from langneurons.store import schema

INT64_MAX: int = int(np.iinfo(np.int64).max)  # every count and token total is stored as int64


@dataclasses.dataclass
class Counts:
    """Additive activation summaries of one or more languages, ready to be written.

    Arrays follow the store's dims: ``n_active[language, role, layer, neuron]``,
    ``n_tokens[language, role]`` and, optionally, moments of the same shape as ``n_active`` and
    per-sequence arrays ``seq_n_active[sequence, role, layer, neuron]``,
    ``seq_n_tokens[sequence, role]`` with labels ``seq_language`` and ``seq_id``.
    The role axis is ``("prompt", "response")``. Per-sequence counts are appended to the run's
    sequences, unless ``seq_index`` names the positions of pre-allocated sequence slots
    (see ``create_run(sequence_labels=...)``) to add them into.

    Counts of a mixture-of-experts model (docs/design/moe.md) give ``moe`` (the experts'
    :class:`~langneurons.store.schema.MoeLayout`) and ``n_routed[language, role, layer, expert]``
    (tokens routed to each expert); ``n_active`` (and the moments) then have the dims
    ``[language, role, layer, expert, neuron]``, and per-sequence counts add
    ``seq_n_routed[sequence, role, layer, expert]`` to a 5-D ``seq_n_active``.
    """

    languages: Sequence[str]
    n_active: np.ndarray
    n_tokens: np.ndarray
    act_sum: np.ndarray | None = None
    act_sqsum: np.ndarray | None = None
    seq_n_active: np.ndarray | None = None
    seq_n_tokens: np.ndarray | None = None
    seq_language: Sequence[str] | None = None
    seq_id: Sequence[str] | None = None
    seq_index: Sequence[int] | None = None
    n_routed: np.ndarray | None = None
    seq_n_routed: np.ndarray | None = None
    moe: schema.MoeLayout | None = None

    def __post_init__(self) -> None:
        self.languages = [schema.check_language(x) for x in self.languages]
        self.n_active = _as_counts("n_active", self.n_active)
        self.n_tokens = _as_counts("n_tokens", self.n_tokens)
        if self.n_routed is not None:
            self.n_routed = _as_counts("n_routed", self.n_routed)
        if self.seq_n_routed is not None:
            self.seq_n_routed = _as_counts("seq_n_routed", self.seq_n_routed)
        self.validate()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_neurons)``."""
        return int(self.n_active.shape[2]), int(self.n_active.shape[-1])

    @property
    def is_moe(self) -> bool:
        """Whether these are the counts of a mixture-of-experts model (``moe`` given)."""
        return self.moe is not None

    @property
    def has_moments(self) -> bool:
        return self.act_sum is not None

    @property
    def has_sequences(self) -> bool:
        return self.seq_n_active is not None

    def validate(self) -> None:
        """Raise StoreValidationError on any structural or count problem."""
        k = len(self.languages)
        if k == 0:
            raise StoreValidationError("no languages given; pass at least one language's counts")
        dup = sorted({x for x in self.languages if list(self.languages).count(x) > 1})
        if dup:
            raise StoreValidationError(f"duplicate language {dup[0]!r}; each language once")
        folded: dict[str, str] = {}
        for lang in self.languages:
            other = folded.setdefault(lang.casefold(), lang)
            if other != lang:
                raise StoreValidationError(
                    f"languages {other!r} and {lang!r} differ only in case; language codes are "
                    "case-insensitive: give each language once"
                )
        moe = _check_moe_parts(self)
        _check_int("n_active", self.n_active, 5 if moe else 4)
        _check_int("n_tokens", self.n_tokens, 2)
        if self.n_active.shape[:2] != (k, 2) or self.n_tokens.shape != (k, 2):
            dims = "layers, experts, neurons" if moe else "layers, neurons"
            raise StoreValidationError(
                f"n_active has shape {self.n_active.shape} and n_tokens {self.n_tokens.shape}; "
                f"expected ({k}, 2, {dims}) and ({k}, 2) for {k} languages x 2 roles"
            )
        if self.n_tokens.min(initial=0) < 0:
            raise StoreValidationError("n_tokens holds negative token totals; totals must be >= 0")
        if self.n_active.min(initial=0) < 0:
            raise StoreValidationError("n_active holds negative counts; counts must be >= 0")
        _check_int64("n_tokens", self.n_tokens, self.languages)
        _check_int64("n_active", self.n_active, self.languages)
        if moe is not None:
            self.n_routed = _check_moe(
                moe,
                "n_active",
                self.n_active,
                "n_routed",
                self.n_routed,
                self.n_tokens,
                self.languages,
            )
        else:
            _check_not_above("n_active", self.n_active, self.n_tokens, self.languages)
        check_token_total(self.n_tokens, self.languages)
        for name in schema.MOMENTS:
            arr = getattr(self, name)
            if (arr is None) != (self.act_sum is None):
                raise StoreValidationError("give both act_sum and act_sqsum, or neither")
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float64)
                setattr(self, name, arr)
                if arr.shape != self.n_active.shape:
                    raise StoreValidationError(
                        f"{name} has shape {arr.shape}; expected {self.n_active.shape}"
                    )
                if not np.isfinite(arr).all():
                    raise StoreValidationError(f"{name} holds NaN or infinite values")
        seq_parts = [self.seq_n_active, self.seq_n_tokens, self.seq_language, self.seq_id]
        names = "seq_n_active, seq_n_tokens, seq_language, seq_id"
        if moe is not None:
            seq_parts.append(self.seq_n_routed)
            names = "seq_n_active, seq_n_routed, seq_n_tokens, seq_language, seq_id"
        elif self.seq_n_routed is not None:
            raise StoreValidationError(
                "seq_n_routed given without moe; per-expert counts need the experts' MoeLayout"
            )
        if any(p is not None for p in seq_parts):
            if any(p is None for p in seq_parts):
                raise StoreValidationError(f"per-sequence counts need all of {names}")
            self._validate_sequences()

    def _validate_sequences(self) -> None:
        assert self.seq_n_active is not None and self.seq_n_tokens is not None
        assert self.seq_language is not None and self.seq_id is not None
        self.seq_n_active = _as_counts("seq_n_active", self.seq_n_active)
        self.seq_n_tokens = _as_counts("seq_n_tokens", self.seq_n_tokens)
        _check_int("seq_n_active", self.seq_n_active, self.n_active.ndim)
        _check_int("seq_n_tokens", self.seq_n_tokens, 2)
        s = len(self.seq_language)
        want = (s, 2, *self.n_active.shape[2:])
        if self.seq_n_active.shape != want or self.seq_n_tokens.shape != (s, 2):
            raise StoreValidationError(
                f"seq_n_active has shape {self.seq_n_active.shape} and seq_n_tokens "
                f"{self.seq_n_tokens.shape}; expected {want} and ({s}, 2)"
            )
        if len(self.seq_id) != s:
            raise StoreValidationError(f"seq_id has {len(self.seq_id)} entries; expected {s}")
        if self.seq_index is not None:
            index = np.asarray(self.seq_index)
            if index.shape != (s,) or index.dtype.kind not in "iu" or (index < 0).any():
                raise StoreValidationError(
                    f"seq_index must hold {s} non-negative integer positions, one per sequence"
                )
            if len(np.unique(index)) != s:
                raise StoreValidationError("seq_index names a sequence position twice")
            self.seq_index = [int(i) for i in index]
        self.seq_language = [str(x) for x in self.seq_language]
        self.seq_id = [str(x) for x in self.seq_id]
        unknown = sorted(set(self.seq_language) - set(self.languages))
        if unknown:
            raise StoreValidationError(
                f"seq_language names {unknown[0]!r}, which is not among the languages written"
            )
        if self.seq_n_active.min(initial=0) < 0 or self.seq_n_tokens.min(initial=0) < 0:
            raise StoreValidationError("per-sequence counts must be >= 0")
        _check_int64("seq_n_tokens", self.seq_n_tokens, self.seq_id)
        _check_int64("seq_n_active", self.seq_n_active, self.seq_id)
        if total(self.seq_n_tokens) > INT64_MAX:  # then their sums per language could wrap
            raise StoreValidationError(
                f"seq_n_tokens adds up to {total(self.seq_n_tokens)}, above the int64 limit "
                f"{INT64_MAX}; check the input: no real token total is this large"
            )
        if self.moe is not None:
            self.seq_n_routed = _check_moe(
                self.moe,
                "seq_n_active",
                self.seq_n_active,
                "seq_n_routed",
                self.seq_n_routed,
                self.seq_n_tokens,
                self.seq_id,
            )
        else:
            _check_not_above("seq_n_active", self.seq_n_active, self.seq_n_tokens, self.seq_id)
        # per-sequence counts must add up to the per-language totals they refine
        lang_index = {x: i for i, x in enumerate(self.languages)}
        idx = np.array([lang_index[x] for x in self.seq_language], dtype=np.intp)
        tok = np.zeros_like(self.n_tokens)
        np.add.at(tok, idx, self.seq_n_tokens.astype(np.int64))
        if not np.array_equal(tok, self.n_tokens):
            raise StoreValidationError(
                "seq_n_tokens summed per language differs from n_tokens; the per-sequence and "
                "per-language counts must come from the same tokens"
            )
        # and so must the counts (per expert too)
        pairs = [("n_active", "seq_n_active")]
        if self.moe is not None:
            pairs.insert(0, ("n_routed", "seq_n_routed"))
        for name, seq_name in pairs:
            mine = np.asarray(getattr(self, name))
            seq = np.asarray(getattr(self, seq_name))
            for k in range(len(self.languages)):
                rows = seq[idx == k]
                summed = rows.sum(axis=0, dtype=np.int64) if rows.shape[0] else 0
                if not np.array_equal(np.broadcast_to(summed, mine.shape[1:]), mine[k]):
                    raise StoreValidationError(
                        f"{seq_name} summed per language differs from {name} (language "
                        f"{self.languages[k]!r}); the per-sequence and per-language counts must "
                        "come from the same tokens"
                    )

    def subset(self, languages: Sequence[str]) -> Counts:
        """The counts of some languages (and their sequences), in the given order."""
        index = [list(self.languages).index(x) for x in languages]
        kwargs: dict[str, Any] = {
            "languages": list(languages),
            "n_active": self.n_active[index],
            "n_tokens": self.n_tokens[index],
        }
        if self.has_moments:
            kwargs["act_sum"] = np.asarray(self.act_sum)[index]
            kwargs["act_sqsum"] = np.asarray(self.act_sqsum)[index]
        if self.has_sequences:
            keep = np.isin(np.asarray(self.seq_language, dtype=object), list(languages))
            kwargs["seq_n_active"] = np.asarray(self.seq_n_active)[keep]
            kwargs["seq_n_tokens"] = np.asarray(self.seq_n_tokens)[keep]
            kwargs["seq_language"] = [
                x for x, k in zip(self.seq_language or [], keep, strict=True) if k
            ]
            kwargs["seq_id"] = [x for x, k in zip(self.seq_id or [], keep, strict=True) if k]
            if self.seq_n_routed is not None:
                kwargs["seq_n_routed"] = np.asarray(self.seq_n_routed)[keep]
        if self.moe is not None:
            kwargs["moe"] = self.moe
            kwargs["n_routed"] = np.asarray(self.n_routed)[index]
        return Counts(**kwargs)


def _as_counts(name: str, value: Any) -> np.ndarray:
    """An array of counts; Python integers beyond int64 are refused, not kept as objects."""
    arr = np.asarray(value)
    if arr.dtype.kind == "O" and all(
        isinstance(x, int | np.integer) and not isinstance(x, bool) for x in arr.ravel()
    ):
        big = [int(x) for x in arr.ravel() if not -INT64_MAX - 1 <= int(x) <= INT64_MAX]
        if big:
            raise StoreValidationError(
                f"{name} holds {big[0]}, beyond the int64 limit {INT64_MAX}; check the input: "
                "no real count is this large"
            )
        arr = arr.astype(np.int64)
    return arr


def total(arr: np.ndarray) -> int:
    """The exact sum of a non-negative integer array, as a Python int (never wraps around)."""
    flat = np.asarray(arr).ravel()
    if float(flat.sum(dtype=np.float64)) < 2.0**62:  # far below int64's limit: exact in int64
        return int(flat.sum(dtype=np.int64))
    return sum(int(x) for x in flat)


def check_token_total(
    n_tokens: np.ndarray, languages: Sequence[str], subject: str = "n_tokens adds up to"
) -> None:
    """Refuse token totals ``[language, role]`` whose sum exceeds int64.

    Analyses add totals over roles (``role="all"``) and languages (the other languages' pooled
    probability), so the whole sum must fit where each total is stored: in int64.
    """
    tokens = np.asarray(n_tokens)
    if total(tokens) <= INT64_MAX:
        return
    i, r = (int(x) for x in np.unravel_index(int(np.argmax(tokens)), tokens.shape))
    raise StoreValidationError(
        f"{subject} {total(tokens)} over languages and roles, above the int64 "
        f"limit {INT64_MAX} (largest: {languages[i]!r} role {schema.ROLES[r]!r}, "
        f"{int(tokens[i, r])}); check the input: no real token total is this large"
    )


def _check_int64(name: str, arr: np.ndarray, labels: Sequence[str]) -> None:
    """Refuse counts ``[row, role, ...]`` (unsigned input) that do not fit in int64."""
    if arr.dtype.kind != "u" or arr.size == 0 or int(arr.max()) <= INT64_MAX:
        return
    i, r = np.argwhere(arr > INT64_MAX)[0][:2]
    value = int(arr[(i, r)].max()) if arr.ndim > 2 else int(arr[i, r])
    raise StoreValidationError(
        f"{name} for {labels[i]!r} role {schema.ROLES[r]!r} is {value}, above the int64 limit "
        f"{INT64_MAX}; check the input: no real count is this large"
    )


def _check_int(name: str, arr: np.ndarray, ndim: int) -> None:
    if arr.dtype.kind not in "iu":
        raise StoreValidationError(f"{name} has dtype {arr.dtype}; counts must be integers")
    if arr.ndim != ndim:
        raise StoreValidationError(f"{name} has {arr.ndim} dims; expected {ndim}")


def _check_not_above(
    name: str, active: np.ndarray, tokens: np.ndarray, labels: Sequence[str]
) -> None:
    if active.dtype == np.uint64:  # compared with int64, numpy would round both to float64
        active = active.astype(np.int64)  # exact: checked against int64's limit before
    above = active > tokens[:, :, None, None]
    if above.any():
        i, r = np.argwhere(above.any(axis=(2, 3)))[0]
        raise StoreValidationError(
            f"{name} exceeds its token total for {labels[i]!r} role {schema.ROLES[r]!r} at "
            f"{int(above[i, r].sum())} cells; counts can never exceed the tokens counted"
        )


def _check_moe_parts(counts: Counts) -> schema.MoeLayout | None:
    """The MoE layout of ``counts`` (None for a dense model's), its parts checked together."""
    if counts.moe is None:
        if counts.n_routed is not None:
            raise StoreValidationError(
                "n_routed given without moe; per-expert counts need the experts' MoeLayout "
                "(Counts(..., moe=MoeLayout(...)))"
            )
        return None
    if not isinstance(counts.moe, schema.MoeLayout):
        raise StoreValidationError(
            f"moe must be a langneurons.store.MoeLayout, got {type(counts.moe).__name__}"
        )
    if counts.n_routed is None:
        raise StoreValidationError(
            "MoE counts need n_routed[language, role, layer, expert], the tokens routed to each "
            "expert (the denominator of n_active)"
        )
    return counts.moe


def _check_moe(
    moe: schema.MoeLayout,
    active_name: str,
    active: np.ndarray,
    routed_name: str,
    routed: np.ndarray | None,
    tokens: np.ndarray,
    labels: Sequence[str],
) -> np.ndarray:
    """Check per-expert counts ``[row, role, layer, expert, neuron]`` against their routing.

    Returns ``routed`` as int64. Every invariant of docs/design/moe.md: the expert and neuron
    dims match ``moe``, padding neurons are 0, no count exceeds its expert's routed tokens, the
    routed experts receive ``top_k`` x the tokens, a shared expert every token.
    """
    assert routed is not None
    rows, _, layers = active.shape[:3]
    if active.shape[3:] != (moe.size, moe.n_neurons):
        raise StoreValidationError(
            f"{active_name} has {active.shape[3]} experts x {active.shape[4]} neurons; the MoE "
            f"layout ({moe.describe()}) has {moe.size} experts x {moe.n_neurons} neurons"
        )
    _check_int(routed_name, routed, 4)
    if routed.shape != (rows, 2, layers, moe.size):
        raise StoreValidationError(
            f"{routed_name} has shape {routed.shape}; expected {(rows, 2, layers, moe.size)} "
            f"({active_name} without its neuron dim)"
        )
    if routed.min(initial=0) < 0:
        raise StoreValidationError(f"{routed_name} holds negative counts; counts must be >= 0")
    _check_int64(routed_name, routed, labels)
    routed = routed.astype(np.int64)
    padding = np.arange(moe.n_neurons)[None, :] >= np.asarray(moe.expert_neurons)[:, None]
    if padding.any():
        bad = np.argwhere((active[:, :, :, padding] != 0).any(axis=-1))
        if bad.size:
            i, r = bad[0][:2]
            raise StoreValidationError(
                f"{active_name} for {labels[i]!r} role {schema.ROLES[r]!r} counts padding "
                "neurons (neuron >= expert_neurons of their expert); those must hold 0"
            )
    counted = active.astype(np.int64) if active.dtype == np.uint64 else active
    above = counted > routed[..., None]
    if above.any():
        i, r = np.argwhere(above.any(axis=(2, 3, 4)))[0]
        raise StoreValidationError(
            f"{active_name} exceeds {routed_name} for {labels[i]!r} role {schema.ROLES[r]!r} at "
            f"{int(above[i, r].sum())} cells; a neuron counts only tokens routed to its expert"
        )
    problems = routing_problems(moe, routed_name, routed, tokens, labels)
    if problems:
        raise StoreValidationError(problems[0])
    return routed


def routing_problems(
    moe: schema.MoeLayout,
    name: str,
    routed: np.ndarray,
    tokens: np.ndarray,
    labels: Sequence[str],
) -> list[str]:
    """How routed-token counts ``[row, role, layer, expert]`` break the routing invariants.

    The routed experts of a layer receive ``top_k`` x the row's tokens between them, and each
    shared expert every token. One line per kind of problem (its first place), empty when none.
    """
    out = []
    routed = np.asarray(routed, dtype=np.int64)
    tok = np.asarray(tokens, dtype=np.int64)
    sums = routed[..., : moe.n_experts].sum(axis=-1, dtype=np.int64)
    bad = np.argwhere(sums != moe.top_k * tok[:, :, None])
    if bad.size:
        i, r, layer = bad[0]
        out.append(
            f"{name} of the routed experts adds up to {int(sums[i, r, layer])} for "
            f"{labels[i]!r} role {schema.ROLES[r]!r} layer {layer}; with top_k={moe.top_k} it "
            f"must be {moe.top_k} x {int(tok[i, r])} tokens"
        )
    shared = routed[..., moe.n_experts :]
    bad = np.argwhere(shared != tok[:, :, None, None])
    if bad.size:
        i, r, layer, e = bad[0]
        out.append(
            f"{name} of shared expert {moe.n_experts + e} is {int(shared[i, r, layer, e])} for "
            f"{labels[i]!r} role {schema.ROLES[r]!r} layer {layer}; a shared expert sees every "
            f"token ({int(tok[i, r])})"
        )
    return out
