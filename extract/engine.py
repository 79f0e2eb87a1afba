"""One-pass extraction: run a model over prompt + response and count positive activations.

For every record the prompt and the response are tokenized separately and their ids
concatenated, so each token is counted under its role (``prompt`` / ``response``) in a single
forward pass; padding is never counted. Work is split into *units* (up to ``unit_size`` records
of one language); each unit's counts are committed to the store as one journaled write keyed by
the unit, so a killed run resumes where it stopped (``resume=True``) and several processes
(``shard=(i, n)`` or different ``languages``) can fill one run at the same time. The run is
created with every language of the data file and, with ``per_sequence``, one slot per record, so
the result does not depend on which process commits first.

Sums of activations are accumulated in float64 per unit and rounded to multiples of
``MOMENT_GRID`` (2**-20) before they are committed: sums of such numbers are exact in float64,
so merging units in any order gives bit-identical stores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from langneurons._progress import Task, progress
from langneurons.errors import (
    AlreadyWrittenError,
    InputFormatError,
    ParameterError,
    RunExistsError,
    StoreValidationError,
)
from langneurons.extract import _hub
from langneurons.extract import corpus as _corpus
from langneurons.extract._torchio import require_torch
from langneurons.names import (
    ACT_SQSUM,
    ACT_SUM,
    N_ACTIVE,
    N_TOKENS,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_TOKENS,
)
from langneurons.store import ActivationStore, Counts, RunMetadata, create_store, schema

log = logging.getLogger(__name__)

MOMENT_GRID = 2.0**-20
Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


# --------------------------------------------------------------------------- model loading
@dataclasses.dataclass
class LoadedModel:
    """A model, its tokenizer, where to find the neurons, and what identifies it."""

    model: Any
    tokenizer: Any
    plan: Any  # architectures.HookPlan
    device: Any
    dtype: str
    identity: dict[str, Any]

    @property
    def n_layers(self) -> int:
        return int(self.plan.n_layers)


def _model_source(
    model: str | os.PathLike[str],
    gguf_file: str | None,
    *,
    revision: str | None = None,
    allow_download: bool = False,
    trust_remote_code: bool = False,
) -> tuple[str, str | None, _hub.Snapshot | None]:
    """Where to load from: a directory, an optional GGUF file name in it, and the Hub snapshot."""
    snapshot = None
    if _hub.is_hub_id(model):
        snapshot = _hub.resolve(
            str(model),
            revision=revision,
            allow_download=allow_download,
            gguf_file=gguf_file,
            trust_remote_code=trust_remote_code,
        )
        path = snapshot.path
    elif revision is not None:
        raise ParameterError(
            f"--revision {revision!r} applies to Hugging Face ids (org/name), not to the local "
            f"path {str(model)!r}; drop --revision"
        )
    else:
        path = Path(model)
    if gguf_file is None and path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    if gguf_file is not None:
        target = path / gguf_file if not Path(gguf_file).is_absolute() else Path(gguf_file)
        if not target.is_file():
            raise InputFormatError(
                f"GGUF file {str(target)!r} does not exist; check --model DIR and --gguf-file FILE"
            )
        return str(target.parent), target.name, snapshot
    if not path.exists():
        raise InputFormatError(
            f"model {str(model)!r} does not exist; give a directory saved with save_pretrained, "
            "a .gguf file, or a Hugging Face id (org/name)"
        )
    if not (path / "config.json").is_file():
        raise InputFormatError(
            f"model directory {str(path)!r} has no config.json; point --model to a directory "
            "saved with save_pretrained, or give --gguf-file"
        )
    return str(path), None, snapshot


def _resolve_device(device: str) -> str:
    torch = require_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(f"--device {device!r} is not one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda was asked for but no CUDA device is available")
    return device


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        torch = require_torch()
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return "bfloat16"
        return "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ParameterError(f"--dtype {dtype!r} is not one of auto, float32, bfloat16, float16")
    return dtype


def load_model(
    model: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    hook_module: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    allow_download: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer and find its neuron modules.

    Parameters
    ----------
    model
        A directory saved with ``save_pretrained``, a ``.gguf`` file (or a directory with
        ``gguf_file``), or a Hugging Face id ``org/name``. An id is looked up in the local
        Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
        ``~/.cache/huggingface/hub``); it is downloaded only with ``allow_download=True`` and
        never while ``HF_HUB_OFFLINE`` is set.
    revision
        A branch, tag or commit of a Hugging Face id (default ``main``).
    allow_download
        Download an id that is not cached (only the config, tokenizer and weight files).
    trust_remote_code
        Allow a model that ships its own code (``auto_map`` in its config) to run it.

    The identity records the model as given and, for an id, the snapshot folder and its commit
    (``snapshot``, ``revision``).
    """
    torch = require_torch()
    import transformers

    source, gguf, snapshot = _model_source(
        model,
        gguf_file,
        revision=revision,
        allow_download=allow_download,
        trust_remote_code=trust_remote_code,
    )
    device = _resolve_device(device)
    dtype = _resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    else:
        config = json.loads((Path(source) / "config.json").read_text())
        if config.get("auto_map") and not trust_remote_code:
            raise ParameterError(
                f"model {str(model)!r} ships its own code (auto_map in config.json); rerun with "
                "--trust-remote-code if you trust it"
            )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(f"cannot load model {str(model)!r}: {first}") from exc
    return _finish(
        loaded.to(torch.device(device)),
        tokenizer,
        device=torch.device(device),
        dtype=dtype,
        name=str(model),
        gguf_file=gguf or "",
        hook_module=hook_module,
        revision=snapshot.commit if snapshot else None,
        snapshot=str(snapshot.path) if snapshot else "",
    )


def from_pretrained_objects(
    model: Any, tokenizer: Any, *, hook_module: str | None = None, name: str | None = None
) -> LoadedModel:
    """Wrap a model and tokenizer already in memory for :func:`extract` and ``ablate``.

    Parameters
    ----------
    model
        A ``transformers`` causal LM (``PreTrainedModel``), on the device and in the dtype it
        should run in; it is switched to eval mode.
    tokenizer
        Its tokenizer; a tokenizer without a pad token gets the end-of-sequence token as one.
    hook_module
        Activation module pattern for an architecture that is not registered.
    name
        The model name recorded with the run (default: the config's ``_name_or_path``).

    Returns
    -------
    LoadedModel
        Pass it as ``model`` (or ``loaded=``) to :func:`extract` or ``ablate``. The counts are
        those of the same model loaded from a path; the run's identity (config hash, hook point,
        dtype) is the same, so either may resume the other's run.

    Examples
    --------
    >>> model = AutoModelForCausalLM.from_pretrained("my-model")  # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("my-model")  # doctest: +SKIP
    >>> extract(model, "data.jsonl", "store.zarr", "m/base", tokenizer=tok)  # doctest: +SKIP
    """
    torch = require_torch()
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ParameterError(
            f"model must be a transformers PreTrainedModel (or a path or id), got "
            f"{type(model).__name__}"
        )
    if tokenizer is None or not callable(tokenizer):
        raise ParameterError(
            "a model object needs its tokenizer: pass tokenizer=..., got "
            f"{type(tokenizer).__name__}"
        )
    config = model.config
    first = next(iter(model.parameters()))
    return _finish(
        model,
        tokenizer,
        device=first.device,
        dtype=str(first.dtype).removeprefix("torch."),
        name=name or str(getattr(config, "_name_or_path", "") or type(model).__name__),
        gguf_file="",
        hook_module=hook_module,
        revision=None,
        snapshot="",
    )


def _finish(
    model: Any,
    tokenizer: Any,
    *,
    device: Any,
    dtype: str,
    name: str,
    gguf_file: str,
    hook_module: str | None,
    revision: str | None,
    snapshot: str,
) -> LoadedModel:
    """Eval mode, a pad token, the neuron modules and the identity of a loaded model."""
    from langneurons.extract.architectures import resolve

    model = model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    plan = resolve(model, hook_module)
    config_text = model.config.to_json_string(use_diff=False)
    identity = {
        "model": name,
        "gguf_file": gguf_file,
        "model_type": plan.model_type,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "hook_point": plan.hook_point,
        "dtype": dtype,
        "revision": revision or str(getattr(model.config, "_commit_hash", "") or ""),
        "snapshot": snapshot,
    }
    return LoadedModel(model, tokenizer, plan, device, dtype, identity)


def as_loaded(
    model: Any, tokenizer: Any = None, loaded: LoadedModel | None = None, **load: Any
) -> LoadedModel:
    """A :class:`LoadedModel` from a path or id, a model object (with ``tokenizer``), or as is."""
    if loaded is not None:
        return loaded
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str | os.PathLike):
        if tokenizer is not None:
            raise ParameterError(
                "tokenizer= goes with a model object; a model path or id loads its own tokenizer"
            )
        return load_model(model, **load)
    return from_pretrained_objects(model, tokenizer, hook_module=load.get("hook_module"))


# --------------------------------------------------------------------------- tokenization
@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of one record: prompt ids then response ids, concatenated without re-tokenizing."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.response)


def encode(
    record: _corpus.Record, tokenizer: Any, *, chat_template: bool, max_length: int
) -> Encoded:
    """Tokenize prompt and response separately; truncate the response first, then the prompt."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ParameterError(
                "--chat-template was given but the tokenizer has no chat template; drop the flag"
            )
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": record.prompt}],
            add_generation_prompt=True,
            tokenize=True,
        )
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
    else:
        prompt = tokenizer(record.prompt, add_special_tokens=True)["input_ids"]
    response = tokenizer(record.response or "", add_special_tokens=False)["input_ids"]
    prompt, response = list(prompt)[:max_length], list(response)
    response = response[: max(0, max_length - len(prompt))]
    return Encoded(tuple(int(x) for x in prompt), tuple(int(x) for x in response))


def bucket_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group sequence indices into batches whose padded size stays within ``batch_tokens``.

    Sequences are sorted by length (longest first, ties by index) so batches hold similar
    lengths and little padding; a sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- counting
class _Accumulator:
    """Device-side sums for one unit: counts, moments, and optional per-sequence counts."""

    def __init__(
        self, torch: Any, n_layers: int, n_neurons: int, n_seq: int, device: Any, per_sequence: bool
    ) -> None:
        self.torch = torch
        self.n_neurons = n_neurons
        self.active = torch.zeros((2, n_layers, n_neurons), dtype=torch.int64, device=device)
        self.total = torch.zeros((2, n_layers, n_neurons), dtype=torch.float64, device=device)
        self.squares = torch.zeros((2, n_layers, n_neurons), dtype=torch.float64, device=device)
        self.seq = (
            torch.zeros((n_seq, 2, n_layers, n_neurons), dtype=torch.int32, device=device)
            if per_sequence
            else None
        )
        self.mask: Any = None  # [B, T, 2] float32 role mask of the current batch
        self.rows: Any = None  # unit-local sequence rows of the current batch

    def __call__(self, layer: int, output: Any) -> None:
        torch = self.torch
        if output.shape[-1] != self.n_neurons:
            raise ParameterError(
                f"the hooked module of layer {layer} outputs {output.shape[-1]} values per token, "
                f"expected {self.n_neurons}; name the activation module with --hook-module"
            )
        b, t, _ = self.mask.shape
        x = output.reshape(-1, self.n_neurons)
        if x.shape[0] != b * t:
            raise ParameterError(
                f"the hooked module of layer {layer} saw {x.shape[0]} tokens, expected {b * t}; "
                "name the activation module with --hook-module"
            )
        x = x.float()
        positive = (x > 0).float()
        roles = self.mask.reshape(b * t, 2).T  # [2, B*T]
        # float32 matmuls count exactly: each sum is at most the batch's tokens (< 2**24)
        self.active[:, layer] += (roles @ positive).to(torch.int64)
        self.total[:, layer] += (roles @ x).double()
        self.squares[:, layer] += (roles @ (x * x)).double()
        if self.seq is not None:
            per_seq = torch.einsum("btr,btn->brn", self.mask, positive.view(b, t, -1))
            self.seq[self.rows, :, layer] += per_seq.to(torch.int32)


def _forward_kwargs(model: Any) -> dict[str, Any]:
    """Ask for no cache and, where supported, logits of the last position only."""
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


def count_unit(
    loaded: LoadedModel,
    encoded: Sequence[Encoded],
    *,
    batch_tokens: int,
    per_sequence: bool,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the model over some records and return their summed counts (numpy, on the host)."""
    from langneurons.extract.architectures import capture

    torch = require_torch()
    n_neurons = loaded.plan.neurons or _probe_neurons(loaded)
    acc = _Accumulator(torch, loaded.n_layers, n_neurons, len(encoded), loaded.device, per_sequence)
    pad = int(loaded.tokenizer.pad_token_id or 0)
    kwargs = _forward_kwargs(loaded.model)
    tokens = torch.zeros((len(encoded), 2), dtype=torch.int64)
    for i, enc in enumerate(encoded):
        tokens[i, 0], tokens[i, 1] = len(enc.prompt), len(enc.response)
    with torch.inference_mode(), capture(loaded.plan, acc):
        for batch in bucket_batches([e.length for e in encoded], batch_tokens):
            ids, mask = pad_batch([encoded[i] for i in batch], pad)
            attention = mask.sum(-1).to(torch.int64)
            acc.mask = mask.to(loaded.device)
            acc.rows = torch.tensor(batch, dtype=torch.int64, device=loaded.device)
            loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=attention.to(loaded.device),
                **kwargs,
            )
            if on_batch is not None:
                on_batch(int(attention.sum()))
    out = {
        N_ACTIVE: acc.active.cpu().numpy(),
        N_TOKENS: tokens.sum(0).numpy(),
        ACT_SUM: _to_grid(acc.total.cpu().numpy()),
        ACT_SQSUM: _to_grid(acc.squares.cpu().numpy()),
        SEQ_N_TOKENS: tokens.numpy(),
    }
    if acc.seq is not None:
        out[SEQ_N_ACTIVE] = acc.seq.cpu().numpy()
    return out


def pad_batch(encoded: Sequence[Encoded], pad: int) -> tuple[Any, Any]:
    """Right-padded token ids ``[B, T]`` and a float role mask ``[B, T, 2]`` (prompt, response)."""
    torch = require_torch()
    width = max(e.length for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(encoded), width, 2), dtype=torch.float32)
    for row, enc in enumerate(encoded):
        p, r = len(enc.prompt), len(enc.response)
        ids[row, : p + r] = torch.tensor(enc.prompt + enc.response, dtype=torch.int64)
        mask[row, :p, 0] = 1.0
        mask[row, p : p + r, 1] = 1.0
    return ids, mask


def _to_grid(values: np.ndarray) -> np.ndarray:
    """Round to multiples of MOMENT_GRID so that later sums are exact in any order."""
    return np.round(values / MOMENT_GRID) * MOMENT_GRID


def _probe_neurons(loaded: LoadedModel) -> int:
    """Neurons per layer for a pattern-resolved plan: run one token and look."""
    from langneurons.extract.architectures import capture

    torch = require_torch()
    seen: dict[int, int] = {}
    with (
        torch.inference_mode(),
        capture(loaded.plan, lambda i, out: seen.setdefault(i, out.shape[-1])),
    ):
        ids = torch.tensor([[int(loaded.tokenizer.pad_token_id or 0)]], device=loaded.device)
        loaded.model(input_ids=ids, use_cache=False)
    sizes = set(seen.values())
    if len(sizes) != 1 or len(seen) != loaded.n_layers:
        raise ParameterError(
            f"the hooked modules output {sorted(sizes)} values per token across {len(seen)} of "
            f"{loaded.n_layers} layers; name one activation module per layer with --hook-module"
        )
    loaded.plan = dataclasses.replace(loaded.plan, neurons=sizes.pop())
    return int(loaded.plan.neurons)


# --------------------------------------------------------------------------- units and shards
@dataclasses.dataclass(frozen=True)
class Unit:
    """Up to ``unit_size`` records of one language, committed to the store as one write."""

    key: str
    language: str
    positions: tuple[int, ...]  # indices into the data file's records


def plan_units(
    records: Sequence[_corpus.Record],
    languages: Sequence[str],
    unit_size: int,
    shard: tuple[int, int] = (0, 1),
) -> list[Unit]:
    """Split the records of ``languages`` into units; keep every n-th unit for shard (i, n)."""
    index, count = shard
    units: list[Unit] = []
    for lang in languages:
        positions = [i for i, r in enumerate(records) if r.language == lang]
        for k in range(0, len(positions), unit_size):
            units.append(
                Unit(f"{lang}/{k // unit_size}", lang, tuple(positions[k : k + unit_size]))
            )
    return [u for n, u in enumerate(units) if n % count == index]


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    if isinstance(text, tuple):
        index, count = text
    else:
        try:
            index, count = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise ParameterError(f"--shard {text!r} is not I/N, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise ParameterError(
            f"--shard {index}/{count} is out of range; use I/N with 0 <= I < N (e.g. 0/2 and 1/2)"
        )
    return index, count


# --------------------------------------------------------------------------- the command
def extract(
    model: str | os.PathLike[str] | LoadedModel | Any,
    data: str | os.PathLike[str],
    store: str | os.PathLike[str],
    run: str,
    *,
    gguf_file: str | None = None,
    languages: Sequence[str] | None = None,
    per_sequence: bool = False,
    batch_tokens: int = 4096,
    max_length: int = 1024,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: bool = False,
    resume: bool = False,
    shard: str | tuple[int, int] = (0, 1),
    hook_module: str | None = None,
    generate: bool = False,
    max_new_tokens: int = 256,
    trust_remote_code: bool = False,
    unit_size: int = 32,
    progress: bool | None = None,
    loaded: LoadedModel | None = None,
    tokenizer: Any = None,
    revision: str | None = None,
    allow_download: bool = False,
) -> dict[str, Any]:
    """Extract activation counts of ``model`` on ``data`` into ``store`` under ``run``.

    Parameters
    ----------
    model, gguf_file
        A directory saved with ``save_pretrained`` (or holding ``gguf_file``), a ``.gguf`` path,
        or a Hugging Face id ``org/name`` found in the local cache (see :func:`load_model`); or a
        model already in memory: a ``transformers`` causal LM with its ``tokenizer=``, or a
        :class:`LoadedModel` (see :func:`from_pretrained_objects`).
    revision, allow_download
        For a Hugging Face id: the branch, tag or commit, and whether a model that is not cached
        may be downloaded (default: refused, naming both fixes).
    data
        JSONL records ``{"language", "prompt", "response", "id"}`` or the reference pipeline's
        MAPO-style JSON (see :func:`langneurons.extract.corpus.read_records`), or ``"builtin"``
        for the built-in ten-language corpus.
    languages
        Extract only these languages (the run still lists every language of the data file).
    per_sequence
        Also store per-sequence counts (needed for bootstrap statistics).
    batch_tokens, max_length
        Padded tokens per batch; longest prompt + response kept per record.
    resume
        Skip units already committed (after an interruption) instead of refusing.
    shard
        ``(i, n)`` or ``"i/n"``: process every n-th unit, starting at i.
    generate, max_new_tokens
        Generate missing responses greedily first; the completed records are saved next to the
        store and extracted.
    progress
        ``False``: report no progress. ``None`` (or ``True``): report it as
        ``langneurons._progress.configure`` chose (the command line: a bar on a terminal, a
        line per step otherwise; a script: ``INFO`` records of the ``langneurons.progress``
        logger), counting the tokens of the units still to do and naming the current unit.

    Returns
    -------
    dict
        What was done: units done and skipped, tokens per role, the run's identity.
    """
    shard = parse_shard(shard)
    for name, value in (
        ("batch_tokens", batch_tokens),
        ("max_length", max_length),
        ("unit_size", unit_size),
        ("max_new_tokens", max_new_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    run = schema.check_name(run)
    records = load_records(data, require_response=not generate)
    all_languages = list(dict.fromkeys(r.language for r in records))
    chosen = _choose_languages(all_languages, languages)
    loaded = as_loaded(
        model,
        tokenizer,
        loaded,
        gguf_file=gguf_file,
        device=device,
        dtype=dtype,
        hook_module=hook_module,
        trust_remote_code=trust_remote_code,
        revision=revision,
        allow_download=allow_download,
    )
    if generate:
        records = generate_missing(
            loaded, records, store, run, max_new_tokens=max_new_tokens, chat_template=chat_template
        )
    identity = {
        **loaded.identity,
        "corpus": str(data),
        "corpus_hash": _corpus.corpus_hash(records),
        "chat_template": chat_template,
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "unit_size": unit_size,
        "per_sequence": per_sequence,
        "moment_grid": MOMENT_GRID,
    }
    # every unit of the whole corpus (all shards, all languages): the run is complete when each
    # is committed, and readers refuse it until then
    planned = [u.key for u in plan_units(records, all_languages, unit_size)]
    opened = _open_or_create_run(
        store, run, loaded, records, all_languages, identity, max_length, planned
    )
    # A process killed inside a commit leaves its journal armed, possibly after it recorded its
    # unit in the run's attributes; roll such writes back (and refresh consolidated metadata a
    # killed writer left stale) before reading which units are committed, or that unit is
    # skipped here and then lost when the next commit rolls it back.
    opened.repair()
    run_writer = opened.writer(run)  # the run's name is checked once, here
    units = plan_units(records, chosen, unit_size, shard)
    done = run_writer.committed_units()
    mine_done = [u.key for u in units if u.key in done]
    if mine_done and not resume:
        raise RunExistsError(
            f"run {run!r} already holds {len(mine_done)} of this command's units (e.g. "
            f"{mine_done[0]!r}); pass --resume to complete it, or choose another --run"
        )
    todo = [u for u in units if u.key not in done]
    encoded = {
        i: encode(records[i], loaded.tokenizer, chat_template=chat_template, max_length=max_length)
        for u in todo
        for i in u.positions
    }
    empty = [records[i].id for i, e in encoded.items() if not e.response and not generate]
    if empty:
        log.warning(
            "%d record(s) have no response tokens after truncation (e.g. %s)", len(empty), empty[0]
        )
    total_tokens = sum(e.length for e in encoded.values())
    report: dict[str, Any] = {
        "store": str(store),
        "run": run,
        "units_total": len(units),
        "units_skipped": len(units) - len(todo),
        "units_done": 0,
        "tokens": {"prompt": 0, "response": 0},
        "identity": identity,
    }

    def commit(unit: Unit, counts: Counts) -> None:
        try:
            run_writer.merge_counts(counts, unit=unit.key)
        except AlreadyWrittenError:
            log.info("unit %s was committed by another process; skipped", unit.key)
            return
        report["units_done"] += 1
        report["tokens"]["prompt"] += int(counts.n_tokens[0, 0])
        report["tokens"]["response"] += int(counts.n_tokens[0, 1])

    # On a GPU each unit is committed by a writer thread while the model runs on the next one
    # (at most one commit in flight; a failure in either is raised here after the other
    # settles). On the CPU the writer would compete with torch's threads, so it commits inline.
    overlap = loaded.device.type == "cuda"
    if report["units_skipped"]:
        log.info("resuming run %r: %d of %d units already done", run, len(mine_done), len(units))
    with (
        reporting("extract", total_tokens, "tok", progress) as task,
        ThreadPoolExecutor(1) as writer,
    ):
        pending: Future[None] | None = None
        try:
            for n, unit in enumerate(todo, 1):
                task.note(f"unit {unit.key} ({n}/{len(todo)})")
                sums = count_unit(
                    loaded,
                    [encoded[i] for i in unit.positions],
                    batch_tokens=batch_tokens,
                    per_sequence=per_sequence,
                    on_batch=task.update,
                )
                counts = _unit_counts(unit, records, sums, per_sequence)
                if pending is not None:
                    pending.result()
                    pending = None
                if overlap:
                    pending = writer.submit(commit, unit, counts)
                else:
                    commit(unit, counts)
        finally:
            if pending is not None:
                pending.result()
    return report


def load_records(
    data: str | os.PathLike[str], *, require_response: bool = True
) -> list[_corpus.Record]:
    """Records of a corpus file, or of the built-in corpus when ``data`` is ``"builtin"``."""
    if str(data) == "builtin":
        return _corpus.builtin_corpus()
    return _corpus.read_records(data, require_response=require_response)


def _choose_languages(all_languages: list[str], languages: Sequence[str] | None) -> list[str]:
    if not languages:
        return all_languages
    missing = [x for x in languages if x not in all_languages]
    if missing:
        raise ParameterError(
            f"language {missing[0]!r} is not in the data (it has {', '.join(all_languages)})"
        )
    return [x for x in all_languages if x in set(languages)]


def _unit_counts(
    unit: Unit, records: Sequence[_corpus.Record], sums: dict[str, np.ndarray], per_sequence: bool
) -> Counts:
    kwargs: dict[str, Any] = {}
    if per_sequence:
        kwargs = {
            SEQ_N_ACTIVE: sums[SEQ_N_ACTIVE],
            SEQ_N_TOKENS: sums[SEQ_N_TOKENS],
            SEQ_LANGUAGE: [unit.language] * len(unit.positions),
            SEQ_ID: [records[i].id for i in unit.positions],
            "seq_index": list(unit.positions),
        }
    return Counts(
        [unit.language],
        sums[N_ACTIVE][None],
        sums[N_TOKENS][None],
        act_sum=sums[ACT_SUM][None],
        act_sqsum=sums[ACT_SQSUM][None],
        **kwargs,
    )


_IDENTITY_KEYS = (
    "config_sha256",
    "hook_point",
    "dtype",
    "corpus_hash",
    "chat_template",
    "max_length",
    "batch_tokens",
    "unit_size",
    "per_sequence",
    "moment_grid",
)


def _open_or_create_run(
    store: str | os.PathLike[str],
    run: str,
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    all_languages: list[str],
    identity: dict[str, Any],
    max_length: int,
    planned: list[str],
) -> ActivationStore:
    opened = create_store(store)
    n_neurons = loaded.plan.neurons or _probe_neurons(loaded)
    if run not in opened.runs():
        meta = RunMetadata(
            model=str(identity["model"]),
            revision=str(identity.get("revision") or ""),
            hook_point=loaded.plan.hook_point,
            activation=loaded.plan.activation or "",
            dtype=loaded.dtype,
            corpus=Path(str(identity["corpus"])).name,
            corpus_hash=str(identity["corpus_hash"]),
            provenance={"method": "extracted", "identity": identity},
        )
        per_sequence = bool(identity["per_sequence"])
        labels = ([r.language for r in records], [r.id for r in records])
        try:
            opened.create_run(
                run,
                n_layers=loaded.n_layers,
                n_neurons=n_neurons,
                metadata=meta,
                moments=True,
                sequences=per_sequence,
                seq_dtype=str(schema.seq_dtype_for(max_length)),
                languages=all_languages,
                sequence_labels=labels if per_sequence else None,
                planned_units=planned,
            )
            return opened
        except RunExistsError:
            pass  # another process created it first: join it below
    theirs = opened.run_metadata(run).provenance.get("identity")
    if not isinstance(theirs, dict):
        raise StoreValidationError(
            f"run {run!r} was not made by `langneurons extract`; extract into another --run"
        )
    checked = [*_IDENTITY_KEYS]
    if theirs.get("revision") and identity.get("revision"):
        checked.append("revision")  # both know which commit of a Hub model they used
    for key in checked:
        if theirs.get(key) != identity.get(key):
            what = "data" if key == "corpus_hash" else "model" if key == "config_sha256" else key
            raise StoreValidationError(
                f"run {run!r} was extracted with a different {what} ({key} "
                f"{theirs.get(key)!r} != {identity.get(key)!r}); refusing to mix them — extract "
                "into another --run"
            )
    return opened


class _Silent:
    """A progress task that shows nothing (``progress=False``)."""

    def update(self, n: float = 1) -> None:
        """Nothing to show."""

    def note(self, status: str) -> None:
        """Nothing to show."""


@contextlib.contextmanager
def reporting(
    desc: str, total: float | None, unit: str, enabled: bool | None = None
) -> Iterator[Task | _Silent]:
    """:func:`langneurons._progress.progress`, or a silent task when ``enabled`` is False."""
    if enabled is False:
        yield _Silent()
        return
    with progress(desc, total=total, unit=unit) as task:
        yield task


# --------------------------------------------------------------------------- generation
def generated_path(store: str | os.PathLike[str], run: str) -> Path:
    """Where ``--generate`` saves the completed records: next to the store."""
    base = str(store)
    if "://" in base and not base.startswith("file://"):
        raise ParameterError("--generate saves records next to the store; use a local store path")
    path = Path(base.removeprefix("file://"))
    return path.parent / f"{path.name}.{run.replace('/', '__')}.generated.jsonl"


def generate_missing(
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    store: str | os.PathLike[str],
    run: str,
    *,
    max_new_tokens: int,
    chat_template: bool,
) -> list[_corpus.Record]:
    """Fill missing responses by greedy generation; save the completed records next to the store.

    A saved file made from the same records and model is reused, so a resumed run generates
    nothing twice.
    """
    torch = require_torch()
    target = generated_path(store, run)
    meta_path = target.with_suffix(".meta.json")
    source = {
        "corpus_hash": _corpus.corpus_hash(records),
        **loaded.identity,
        "max_new_tokens": max_new_tokens,
        "chat_template": chat_template,
    }
    if target.exists() and meta_path.exists():
        if json.loads(meta_path.read_text()) == source:
            log.info("reusing generated responses from %s", target)
            return _corpus.read_records(target)
    out: list[_corpus.Record] = []
    tok = loaded.tokenizer
    with torch.inference_mode():
        for record in records:
            if record.response:
                out.append(record)
                continue
            enc = encode(record, tok, chat_template=chat_template, max_length=10**9)
            ids = torch.tensor([enc.prompt], device=loaded.device)
            new = loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, ids.shape[1] :]
            text = tok.decode(new, skip_special_tokens=True).strip() or "(empty)"
            out.append(dataclasses.replace(record, response=text))
    _corpus.write_records(target, out)
    meta_path.write_text(json.dumps(source, indent=2))
    log.info("saved %d generated responses to %s", sum(not r.response for r in records), target)
    return out
