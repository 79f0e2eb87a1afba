"""Hugging Face model ids: found in the local cache, downloaded only when the caller allows it.

``--model org/name`` that is not a local path is looked up in the Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``; read when called, so a
changed environment is seen). Nothing is downloaded unless ``allow_download`` is given, and never
while ``HF_HUB_OFFLINE`` is set. The snapshot folder and its commit hash identify what was used.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from langneurons.errors import InputFormatError, MissingDependencyError, ParameterError

#: ``org/name``: what a model id on the Hub looks like (a path that does not exist locally).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A model repository's files in the cache: where they are and which commit they are."""

    repo_id: str
    path: Path
    commit: str


def is_hub_id(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names a Hub repository (``org/name``) rather than a local path."""
    text = str(model)
    return (
        not Path(text).exists()
        and bool(_HUB_ID.match(text))
        and not text.endswith(".gguf")
        and ".." not in text.split("/")
    )


def hub_cache() -> Path:
    """The cache folder huggingface_hub uses, from the environment as it is now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids network access."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def _patterns(gguf_file: str | None, trust_remote_code: bool) -> list[str]:
    """The files a download fetches: config, tokenizer and weights (not every format)."""
    if gguf_file is not None:
        return [gguf_file, "*.json"]
    patterns = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
    return [*patterns, "*.py"] if trust_remote_code else patterns


def resolve(
    repo_id: str,
    *,
    revision: str | None = None,
    allow_download: bool = False,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> Snapshot:
    """The cached snapshot of ``repo_id`` at ``revision``; download it first if allowed."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise MissingDependencyError(
            "resolving a Hugging Face model id needs huggingface_hub; install langneurons[extract]"
        ) from exc
    cache = hub_cache()
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    at = f" at revision {revision!r}" if revision else ""
    fetch = allow_download and not offline()
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=not fetch,
            allow_patterns=_patterns(gguf_file, trust_remote_code) if fetch else None,
        )
        if fetch and gguf_file is None and not any(Path(path).glob("*.safetensors")):
            # an older repository with PyTorch .bin weights only
            path = snapshot_download(
                repo_id, revision=revision, cache_dir=cache, allow_patterns=["*.bin"]
            )
    except (OSError, ValueError) as exc:
        if not fetch:
            blocked = (
                "HF_HUB_OFFLINE is set, so --allow-download cannot fetch it; unset HF_HUB_OFFLINE"
                if allow_download
                else "pass --allow-download to download it"
            )
            raise InputFormatError(
                f"model {repo_id!r}{at} is not a local path and not in the Hugging Face cache "
                f"(looked in {folder}); {blocked}, or give a local directory saved with "
                "save_pretrained"
            ) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(
            f"cannot download model {repo_id!r}{at}: {first}; check the id and the network, or "
            "give a local directory saved with save_pretrained"
        ) from exc
    commit = Path(path).name
    if not _COMMIT.match(commit):
        raise ParameterError(
            f"the cached snapshot of {repo_id!r} is at {path}, not in a folder named by its "
            "commit hash; give that folder as a local path instead"
        )
    return Snapshot(repo_id, Path(path), commit)


__all__ = ["Snapshot", "hub_cache", "is_hub_id", "offline", "resolve"]
