"""The on-disk schema of a langneurons activation store (schema version 2).

Everything another tool needs to read a store with plain xarray is named here, and nowhere else.

Layout (one Zarr v3 hierarchy)::

    STORE/                         root group, attrs {"langneurons": {"schema_version": 1, ...}}
      <run path>/                  one group per run, e.g. "mistral-7b/base"; attrs = RunMetadata
        language[language]         variable-length UTF-8 labels, store order
        role[role]                 "prompt", "response"
        layer[layer], neuron[neuron]   int64 indices
        n_active[language, role, layer, neuron]   int64, tokens with activation > 0
        n_tokens[language, role]                  int64, counted tokens
        act_sum, act_sqsum[language, role, layer, neuron]   float64 (optional)
        seq_n_active[sequence, role, layer, neuron]         unsigned int (optional)
        seq_n_tokens[sequence, role]                        int64 (optional, with seq_n_active)
        seq_language[sequence], seq_id[sequence]            strings (optional, with seq_n_active)
        mixture-of-experts runs (docs/design/moe.md; the store is then version 3):
        n_active, act_sum, act_sqsum[language, role, layer, expert, neuron]
        n_routed[language, role, layer, expert]              int64, tokens routed to the expert
        seq_n_active[sequence, role, layer, expert, neuron], seq_n_routed[sequence, role, layer,
        expert] (optional); expert[expert], expert_shared[expert] (bool), expert_neurons[expert]
        and the run attribute "moe" {"n_experts", "n_shared", "top_k", "model_type"}
        identification/<name>/     results saved next to the run (later issues)
        _journal/                  exists only while a write is in flight (or was killed)

All counts are additive: shards of one language merge by addition. Probabilities are computed at
read time (``n_active / n_tokens``), never stored.

Integrity (new in version 2): every chunk of every array is written, none left implicit as the
fill value, and every chunk's codec chain ends in a CRC32C checksum, so a missing or damaged
chunk file is detected (``store/_integrity.py``). Each array's ``chunk_manifest.json`` records
the checksum of the chunk written at each place, so a valid chunk copied from elsewhere (another
run, another language's row) is detected too; groups whose arrays all have one carry the
attribute ``chunk_manifests`` (additive: older readers ignore both, no version bump). Saved
results carry ``result_kind`` and ``result_name`` attributes. Version 1 stores lack checksums and
write no chunk that holds only zeros; ``langneurons migrate`` rewrites them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import operator
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np

from langneurons import names
from langneurons.errors import InvalidNameError, SchemaVersionError, StoreValidationError

SCHEMA_VERSION: Final = 2
#: The version of a store (and of a run) that holds a mixture-of-experts run: a store becomes
#: version 3 when its first MoE run is created, so that releases reading only version 2 refuse
#: it in one clear line instead of misreading its 5-D counts (docs/design/moe.md). Stores of
#: dense runs only stay version 2, readable by older releases; this release reads both.
MOE_SCHEMA_VERSION: Final = 3
READS: Final = (SCHEMA_VERSION, MOE_SCHEMA_VERSION)  # versions this release reads as they are
MIGRATES_FROM: Final = (1,)  # older versions `langneurons migrate` rewrites
STORE_ATTR: Final = "langneurons"  # root attribute holding {"schema_version": ..., "kind": "store"}

# dimensions and roles: the shared vocabulary (langneurons.names), re-exported as the schema's
LANGUAGE, ROLE, LAYER, NEURON, SEQUENCE = (
    names.LANGUAGE,
    names.ROLE,
    names.LAYER,
    names.NEURON,
    names.SEQUENCE,
)
ROLES: Final = names.ROLES
Role = names.Role

# reserved group names inside a run (never valid run-path components)
JOURNAL: Final = "_journal"
#: Attribute of a results-only group: the results of a run whose counts live in another store
#: (``--results-store``); ``{"store": URL, "run": RUN, "model", "corpus_hash", "created"}``.
RESULTS_OF: Final = "results_of"
RESULT_GROUPS: Final = ("identification", "stats", "compare", "ablation")
#: Next to each array's ``zarr.json``: ``{"crc32c": {CHUNK KEY: the chunk's stored checksum}}``, the
#: checksum each chunk had when it was written there (``store/_manifest.py``). Zarr ignores it.
CHUNK_MANIFEST: Final = "chunk_manifest.json"
#: Attribute of a run or result group whose arrays all carry a chunk manifest (its format, 1).
#: Groups written before manifests lack it: their chunks' places are unverified.
MANIFESTS_ATTR: Final = "chunk_manifests"
#: Run attribute: the run's language labels and token totals as JSON text
#: (``{"language": [...], "n_tokens": [[prompt, response], ...]}``), rewritten with every commit
#: so that ``langneurons info`` reads them without decoding arrays; ``validate`` checks it
#: against ``language`` and ``n_tokens``. Runs written before it have none.
TOKEN_TOTALS_ATTR: Final = "token_totals"
RESERVED_NAMES: Final = frozenset({JOURNAL, *RESULT_GROUPS})
#: Names Zarr gives its own metadata files (v3 and v2, consolidated included): a run or result
#: component of one of these names would overwrite or hide a node's metadata.
ZARR_KEYS: Final = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})


@dataclasses.dataclass(frozen=True)
class VariableSpec:
    """One array of a run: its dims, dtype kind and whether every run has it."""

    name: str
    dims: tuple[str, ...]
    kind: Literal["i", "u", "f", "b", "T"]  # numpy dtype kind; "T" = variable-length string
    dtype: str | None  # exact dtype when fixed, None when any of the kind is allowed
    group: Literal["required", "moments", "sequences", "coordinate"]


COUNT_DIMS: Final = names.COUNT_DIMS
SEQ_DIMS: Final = names.SEQ_DIMS

VARIABLES: Final[dict[str, VariableSpec]] = {
    v.name: v
    for v in (
        VariableSpec(LANGUAGE, (LANGUAGE,), "T", None, "coordinate"),
        VariableSpec(ROLE, (ROLE,), "T", None, "coordinate"),
        VariableSpec(LAYER, (LAYER,), "i", "int64", "coordinate"),
        VariableSpec(NEURON, (NEURON,), "i", "int64", "coordinate"),
        VariableSpec("n_active", COUNT_DIMS, "i", "int64", "required"),
        VariableSpec("n_tokens", (LANGUAGE, ROLE), "i", "int64", "required"),
        VariableSpec("act_sum", COUNT_DIMS, "f", "float64", "moments"),
        VariableSpec("act_sqsum", COUNT_DIMS, "f", "float64", "moments"),
        VariableSpec("seq_n_active", SEQ_DIMS, "u", None, "sequences"),
        VariableSpec("seq_n_tokens", (SEQUENCE, ROLE), "i", "int64", "sequences"),
        VariableSpec("seq_language", (SEQUENCE,), "T", None, "sequences"),
        VariableSpec("seq_id", (SEQUENCE,), "T", None, "sequences"),
    )
}
#: CF-style attributes of each variable (``long_name``, ``units``, ``description``), written with
#: the arrays so that plain xarray, netCDF tools and dataset viewers describe them.
VARIABLE_ATTRS: Final[dict[str, dict[str, str]]] = {
    LANGUAGE: {"long_name": "language", "description": "language label (e.g. an ISO 639 code)"},
    ROLE: {"long_name": "token role", "description": "prompt or response tokens"},
    LAYER: {"long_name": "decoder layer", "units": "1", "description": "0-based layer index"},
    NEURON: {
        "long_name": "MLP neuron",
        "units": "1",
        "description": "0-based index of the MLP activation output within its layer",
    },
    "n_active": {
        "long_name": "active token count",
        "units": "tokens",
        "description": "counted tokens of the language and role on which the neuron's "
        "activation is > 0",
    },
    "n_tokens": {
        "long_name": "token count",
        "units": "tokens",
        "description": "counted tokens of the language and role (the denominator of n_active)",
    },
    "act_sum": {
        "long_name": "sum of activations",
        "units": "activation",
        "description": "sum of the neuron's activation over the counted tokens",
    },
    "act_sqsum": {
        "long_name": "sum of squared activations",
        "units": "activation^2",
        "description": "sum of the neuron's squared activation over the counted tokens",
    },
    "seq_n_active": {
        "long_name": "active token count per sequence",
        "units": "tokens",
        "description": "tokens of one sequence and role on which the neuron's activation is > 0",
    },
    "seq_n_tokens": {
        "long_name": "token count per sequence",
        "units": "tokens",
        "description": "counted tokens of one sequence and role",
    },
    "seq_language": {"long_name": "language of the sequence"},
    "seq_id": {
        "long_name": "item id of the sequence",
        "description": "pairs parallel items across languages",
    },
}
REQUIRED: Final = tuple(n for n, v in VARIABLES.items() if v.group in ("required", "coordinate"))
MOMENTS: Final = ("act_sum", "act_sqsum")
SEQUENCES: Final = ("seq_n_active", "seq_n_tokens", "seq_language", "seq_id")

# mixture-of-experts runs (docs/design/moe.md): the counts gain an expert dim before neuron
MOE_COUNT_DIMS: Final = names.MOE_COUNT_DIMS
MOE_SEQ_DIMS: Final = names.MOE_SEQ_DIMS
_MOE_DIMS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {
    COUNT_DIMS: MOE_COUNT_DIMS,
    SEQ_DIMS: MOE_SEQ_DIMS,
}
#: The arrays of a MoE run: the dense ones with the expert dim, and the expert's own.
MOE_VARIABLES: Final[dict[str, VariableSpec]] = {
    **{
        n: dataclasses.replace(
            v,
            dims=_MOE_DIMS.get(v.dims, v.dims),
        )
        for n, v in VARIABLES.items()
    },
    **{
        v.name: v
        for v in (
            VariableSpec(names.EXPERT, (names.EXPERT,), "i", "int64", "coordinate"),
            VariableSpec(names.EXPERT_SHARED, (names.EXPERT,), "b", "bool", "coordinate"),
            VariableSpec(names.EXPERT_NEURONS, (names.EXPERT,), "i", "int64", "coordinate"),
            VariableSpec(names.N_ROUTED, MOE_COUNT_DIMS[:-1], "i", "int64", "required"),
            VariableSpec(names.SEQ_N_ROUTED, MOE_SEQ_DIMS[:-1], "i", "int64", "sequences"),
        )
    },
}
MOE_REQUIRED: Final = tuple(
    n for n, v in MOE_VARIABLES.items() if v.group in ("required", "coordinate")
)
MOE_SEQUENCES: Final = (*SEQUENCES, names.SEQ_N_ROUTED)
VARIABLE_ATTRS.update(
    {
        names.EXPERT: {
            "long_name": "expert",
            "units": "1",
            "description": "0-based expert index within its layer: routed experts, then shared",
        },
        names.EXPERT_SHARED: {
            "long_name": "shared expert",
            "description": "True for a shared (always-on) expert that sees every token",
        },
        names.EXPERT_NEURONS: {
            "long_name": "neurons of the expert",
            "units": "1",
            "description": "MLP neurons the expert has; neuron indices at or above it are "
            "padding (count 0)",
        },
        names.N_ROUTED: {
            "long_name": "routed token count",
            "units": "tokens",
            "description": "counted tokens of the language and role routed to the expert (the "
            "denominator of n_active in a mixture-of-experts run)",
        },
        names.SEQ_N_ROUTED: {
            "long_name": "routed token count per sequence",
            "units": "tokens",
            "description": "tokens of one sequence and role routed to the expert",
        },
    }
)


def variables(moe: bool) -> dict[str, VariableSpec]:
    """The arrays of a dense run, or of a mixture-of-experts run (``moe``)."""
    return MOE_VARIABLES if moe else VARIABLES


@dataclasses.dataclass(frozen=True)
class MoeLayout:
    """The experts of a mixture-of-experts model, as one of its runs stores them.

    Parameters
    ----------
    expert_neurons
        Neurons of each expert, in expert order: the routed experts, then the shared ones.
        The run's ``neuron`` dim is their maximum; an expert's higher neuron indices are padding.
    n_shared
        How many of the experts (the last ones) are shared (always-on) experts.
    top_k
        Routed experts each token is sent to (per layer).
    model_type
        The model's ``config.model_type`` (e.g. ``"qwen2_moe"``), "" when unknown.
    """

    expert_neurons: tuple[int, ...]
    n_shared: int = 0
    top_k: int = 1
    model_type: str = ""

    def __post_init__(self) -> None:
        try:
            neurons = tuple(operator.index(x) for x in self.expert_neurons)
        except TypeError:
            raise StoreValidationError(
                f"expert_neurons must be integers, one per expert; got {self.expert_neurons!r}"
            ) from None
        object.__setattr__(self, "expert_neurons", neurons)
        n = len(neurons)
        if isinstance(self.n_shared, bool) or not isinstance(self.n_shared, int | np.integer):
            raise StoreValidationError(f"n_shared must be an integer, got {self.n_shared!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int | np.integer):
            raise StoreValidationError(f"top_k must be an integer, got {self.top_k!r}")
        object.__setattr__(self, "n_shared", int(self.n_shared))
        object.__setattr__(self, "top_k", int(self.top_k))
        if not 0 <= self.n_shared < n:
            raise StoreValidationError(
                f"n_shared is {self.n_shared} for {n} experts; a MoE run needs at least one "
                "routed expert and 0 <= n_shared < experts"
            )
        if not 1 <= self.top_k <= self.n_experts:
            raise StoreValidationError(
                f"top_k is {self.top_k}; it must be between 1 and the {self.n_experts} routed "
                "experts"
            )
        if min(neurons) < 1:
            raise StoreValidationError(
                f"expert_neurons holds {min(neurons)}; every expert has at least one neuron"
            )
        if not isinstance(self.model_type, str):
            raise StoreValidationError(f"model_type must be a string, got {self.model_type!r}")

    @property
    def n_experts(self) -> int:
        """Routed experts (expert indices ``0..n_experts-1``)."""
        return len(self.expert_neurons) - self.n_shared

    @property
    def size(self) -> int:
        """Length of the ``expert`` dim: routed and shared experts."""
        return len(self.expert_neurons)

    @property
    def n_neurons(self) -> int:
        """Length of the ``neuron`` dim: the largest expert's neurons."""
        return max(self.expert_neurons)

    @property
    def expert_shared(self) -> np.ndarray:
        """The ``expert_shared`` coordinate."""
        return np.arange(self.size) >= self.n_experts

    def to_attr(self) -> dict[str, Any]:
        """The run attribute :data:`langneurons.names.MOE_ATTR` (stored as JSON text)."""
        return {
            "n_experts": self.n_experts,
            "n_shared": self.n_shared,
            "top_k": self.top_k,
            "model_type": self.model_type,
        }

    def describe(self) -> str:
        """``"8 routed + 1 shared experts, top-2"``, for messages."""
        shared = f" + {self.n_shared} shared" if self.n_shared else ""
        return f"{self.n_experts} routed{shared} experts, top-{self.top_k}"

    @classmethod
    def from_parts(
        cls, attr: Any, expert_shared: Any, expert_neurons: Any, where: str = "run"
    ) -> MoeLayout:
        """The layout of a stored run: its ``moe`` attribute (mapping or JSON text) and coords."""
        import json

        if isinstance(attr, str):
            try:
                attr = json.loads(attr)
            except ValueError:
                attr = None
        if not isinstance(attr, Mapping):
            raise StoreValidationError(f"{where}: attribute {names.MOE_ATTR!r} must be a mapping")
        layout = cls(
            tuple(int(x) for x in np.asarray(expert_neurons).ravel()),
            n_shared=attr.get("n_shared", -1),
            top_k=attr.get("top_k", 0),
            model_type=attr.get("model_type", ""),
        )
        shared = np.asarray(expert_shared, dtype=bool).ravel()
        if attr.get("n_experts") != layout.n_experts or not np.array_equal(
            shared, layout.expert_shared
        ):
            raise StoreValidationError(
                f"{where}: attribute {names.MOE_ATTR!r} ({dict(attr)}) does not match the "
                f"expert_shared coordinate {shared.tolist()} (routed experts first, then shared)"
            )
        return layout


SEQ_COORDS: Final = ("seq_language", "seq_id")
SEQ_DTYPES: Final = ("uint8", "uint16", "uint32", "uint64")

# a run path: slash-separated components of letters, digits, '.', '_', '-' (not leading '.'/'_')
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str, what: str = "run") -> str:
    """Return the normalised run (or result) path, or raise InvalidNameError."""
    if not isinstance(name, str) or not name.strip("/"):
        raise InvalidNameError(f"{what} name {name!r} is empty; give a path such as 'model/base'")
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise InvalidNameError(
            f"{what} name {name!r} is absolute; use a relative path such as 'model/base'"
        )
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidNameError(
                f"{what} name {name!r} contains {part!r}; use plain components such as 'model/base'"
            )
        if part in RESERVED_NAMES or part.lower() in ZARR_KEYS:
            raise InvalidNameError(
                f"{what} name {name!r} uses the reserved component {part!r}; choose another name"
            )
        if not _COMPONENT.match(part):
            raise InvalidNameError(
                f"{what} name {name!r}: component {part!r} must start with a letter or digit and "
                "hold only letters, digits, '.', '_' and '-'"
            )
    return "/".join(parts)


def lineage(path: str) -> list[str]:
    """``path`` and the groups above it, top first: ``"a/b/c"`` gives ``a``, ``a/b``, ``a/b/c``."""
    parts = path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_language(label: object) -> str:
    """Return a valid language label or raise StoreValidationError."""
    if not isinstance(label, str) or not label or "/" in label or any(c.isspace() for c in label):
        raise StoreValidationError(
            f"language label {label!r} is invalid; use a non-empty code without spaces such as "
            "'de' or 'zh-Hans'"
        )
    return label


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclasses.dataclass(frozen=True)
class RunMetadata:
    """Provenance attributes every run carries (parsed from and written to the run group's attrs).

    Parameters
    ----------
    model
        Model name or path it was loaded from.
    revision
        Revision, checkpoint or training step ("" when unknown).
    hook_point
        Module whose output was counted, e.g. ``"model.layers.*.mlp.act_fn"``.
    activation
        Activation function name, e.g. ``"silu"``.
    dtype
        Model dtype during extraction (``"float32"``, ``"bfloat16"``, or ``"unknown"`` for imports).
    corpus
        Corpus name, and ``corpus_hash`` its content hash (``"sha256:..."``, "" when unknown).
    provenance
        How it was made: ``{"method": "extracted" | "imported", ...}`` with source files or command.
    """

    model: str = ""
    revision: str = ""
    hook_point: str = ""
    activation: str = ""
    dtype: str = "unknown"
    corpus: str = ""
    corpus_hash: str = ""
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tool_version: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_attrs(self) -> dict[str, Any]:
        """JSON-serialisable attributes for the run group."""
        from langneurons._version import __version__

        out = dataclasses.asdict(self)
        out["provenance"] = dict(self.provenance)
        out["tool_version"] = self.tool_version or __version__
        out["created"] = self.created or now_iso()
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str = "run") -> RunMetadata:
        """Parse and validate run attributes."""
        version = attrs.get("schema_version")
        if version is None:
            raise StoreValidationError(f"{where} has no schema_version attribute; it is not a run")
        check_version(version, where)
        from langneurons.store._attrs import decode

        attrs = decode(attrs)  # provenance is stored as JSON text (nested in older runs)
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: attrs[k] for k in fields if k in attrs}
        prov = kwargs.get("provenance", {})
        if not isinstance(prov, Mapping):
            raise StoreValidationError(f"{where}: attribute provenance must be a mapping")
        return cls(**kwargs)


def check_version(version: object, where: str = "store", url: str | None = None) -> None:
    """Raise SchemaVersionError unless ``version`` is one this release reads."""
    if isinstance(version, bool) or not isinstance(version, int):
        found = (
            f"the string {version!r}"
            if isinstance(version, str)
            else f"a {type(version).__name__} ({version!r})"
        )
        raise SchemaVersionError(
            f"{where}: schema_version must be the integer {SCHEMA_VERSION}, found {found}; the "
            "attribute is damaged: restore the store from a copy"
        )
    if version in READS:
        return
    if version in MIGRATES_FROM:
        raise SchemaVersionError(
            f"{where} has schema version {version}, older than version {SCHEMA_VERSION} that this "
            f"langneurons reads; upgrade it with `langneurons migrate {url or 'STORE'}`"
        )
    raise SchemaVersionError(
        f"{where} has schema version {version!r} but this langneurons reads version "
        f"{SCHEMA_VERSION}; install the langneurons release that wrote it, or re-import"
    )


def layer_chunk(n_layers: int, n_neurons: int, itemsize: int = 8, target: int = 8 << 20) -> int:
    """Layers per chunk so that one (language, role) chunk stays near ``target`` bytes."""
    per_layer = max(1, n_neurons * itemsize)
    return int(max(1, min(n_layers, target // per_layer)))


def expert_chunks(
    n_layers: int, n_experts: int, n_neurons: int, itemsize: int = 8, target: int = 8 << 20
) -> tuple[int, int]:
    """``(layers, experts)`` per chunk of a MoE count array, near ``target`` bytes per chunk.

    As dense runs chunk whole layers: every expert of as many layers as fit, or, when one
    layer's experts are larger than ``target``, as many whole experts of one layer as fit.
    """
    per_layer = n_experts * n_neurons * itemsize
    if per_layer <= target:
        return layer_chunk(n_layers, n_experts * n_neurons, itemsize, target), n_experts
    return 1, int(max(1, min(n_experts, target // max(1, n_neurons * itemsize))))


def seq_dtype_for(max_count: int) -> np.dtype[Any]:
    """Smallest unsigned dtype that holds ``max_count``."""
    for name in SEQ_DTYPES:
        if max_count <= np.iinfo(name).max:
            return np.dtype(name)
    raise StoreValidationError(f"per-sequence count {max_count} exceeds uint64")
