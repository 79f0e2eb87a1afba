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

    def __post_init__(self) -> None:
        self.languages = [schema.check_language(x) for x in self.languages]
        self.n_active = _as_counts("n_active", self.n_active)
        self.n_tokens = _as_counts("n_tokens", self.n_tokens)
        self.validate()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_neurons)``."""
        return int(self.n_active.shape[2]), int(self.n_active.shape[3])

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
        _check_int("n_active", self.n_active, 4)
        _check_int("n_tokens", self.n_tokens, 2)
        if self.n_active.shape[:2] != (k, 2) or self.n_tokens.shape != (k, 2):
            raise StoreValidationError(
                f"n_active has shape {self.n_active.shape} and n_tokens {self.n_tokens.shape}; "
                f"expected ({k}, 2, layers, neurons) and ({k}, 2) for {k} languages x 2 roles"
            )
        if self.n_tokens.min(initial=0) < 0:
            raise StoreValidationError("n_tokens holds negative token totals; totals must be >= 0")
        if self.n_active.min(initial=0) < 0:
            raise StoreValidationError("n_active holds negative counts; counts must be >= 0")
        _check_int64("n_tokens", self.n_tokens, self.languages)
        _check_int64("n_active", self.n_active, self.languages)
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
        if any(p is not None for p in seq_parts):
            if any(p is None for p in seq_parts):
                raise StoreValidationError(
                    "per-sequence counts need all of seq_n_active, seq_n_tokens, seq_language, "
                    "seq_id"
                )
            self._validate_sequences()

    def _validate_sequences(self) -> None:
        assert self.seq_n_active is not None and self.seq_n_tokens is not None
        assert self.seq_language is not None and self.seq_id is not None
        self.seq_n_active = _as_counts("seq_n_active", self.seq_n_active)
        self.seq_n_tokens = _as_counts("seq_n_tokens", self.seq_n_tokens)
        _check_int("seq_n_active", self.seq_n_active, 4)
        _check_int("seq_n_tokens", self.seq_n_tokens, 2)
        s = len(self.seq_language)
        layers, neurons = self.shape
        if self.seq_n_active.shape != (s, 2, layers, neurons) or self.seq_n_tokens.shape != (s, 2):
            raise StoreValidationError(
                f"seq_n_active has shape {self.seq_n_active.shape} and seq_n_tokens "
                f"{self.seq_n_tokens.shape}; expected ({s}, 2, {layers}, {neurons}) and ({s}, 2)"
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
