"""Loading a model: from a directory, a GGUF file, a Hugging Face id, or objects in memory.

Every way in ends in one :class:`LoadedModel`: the model in eval mode, its tokenizer (with a pad
token), the hook plan that finds its neuron modules, and the identity recorded with a run, so a
run extracted from a path and one extracted from the same model in memory are interchangeable.
Public names are re-exported by :mod:`langneurons.extract.engine`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from langneurons.errors import InputFormatError, ParameterError
from langneurons.extract import _hub
from langneurons.extract._torchio import require_torch

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


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


def resolve_device(device: str) -> str:
    """``auto`` as the device torch has (``cuda`` when available); a CUDA ask checked."""
    torch = require_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(f"--device {device!r} is not one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda was asked for but no CUDA device is available")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` as bfloat16 on a GPU that supports it, else float32; others checked."""
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
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
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
    from langneurons.extract._moe import looks_moe, resolve_moe
    from langneurons.extract.architectures import resolve

    model = model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    plan: Any
    if looks_moe(model):
        if hook_module is not None:
            raise ParameterError(
                f"--hook-module cannot count a mixture of experts ({model.config.model_type}): "
                "its neurons live inside experts that see only their routed tokens; drop "
                "--hook-module (supported MoE architectures are counted per expert)"
            )
        plan = resolve_moe(model)
    else:
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
