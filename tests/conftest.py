"""Shared fixtures: tiny synthetic counts and stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from langneurons.store import Counts

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
V1_ZIP = Path(__file__).parent / "data" / "store-v1.zip"  # made by langneurons 0.1 (schema 1)


def make_counts(
    languages: Sequence[str],
    *,
    layers: int = 3,
    neurons: int = 7,
    seed: int = 0,
    moments: bool = False,
    sequences: int = 0,
) -> Counts:
    """Random but valid counts; with ``sequences``, that many per language, summing exactly."""
    rng = np.random.default_rng(seed)
    k = len(languages)
    if sequences:
        seq_tokens = rng.integers(1, 40, size=(k * sequences, 2))
        seq_active = (
            rng.random((k * sequences, 2, layers, neurons)) * (seq_tokens[:, :, None, None] + 1)
        ).astype(np.int64)
        seq_active = np.minimum(seq_active, seq_tokens[:, :, None, None])
        seq_language = [lang for lang in languages for _ in range(sequences)]
        tokens = seq_tokens.reshape(k, sequences, 2).sum(axis=1)
        active = seq_active.reshape(k, sequences, 2, layers, neurons).sum(axis=1)
    else:
        tokens = rng.integers(20, 200, size=(k, 2))
        active = (rng.random((k, 2, layers, neurons)) * (tokens[:, :, None, None] + 1)).astype(
            np.int64
        )
        active = np.minimum(active, tokens[:, :, None, None])
    kwargs: dict[str, object] = {}
    if moments:
        kwargs["act_sum"] = active * 0.25 + rng.random(active.shape)
        kwargs["act_sqsum"] = active * 0.5 + rng.random(active.shape)
    if sequences:
        kwargs.update(
            seq_n_active=seq_active.astype(np.uint16),
            seq_n_tokens=seq_tokens,
            seq_language=seq_language,
            seq_id=[f"item{i % sequences}" for i in range(k * sequences)],
        )
    return Counts(languages, active.astype(np.int64), tokens.astype(np.int64), **kwargs)  # type: ignore[arg-type]


def unit_counts(full: Counts, lang: str, rows: list[int]) -> Counts:
    """The counts of some of one language's sequences, addressed to their slots."""
    seq = np.asarray(full.seq_n_active)[rows]
    tok = np.asarray(full.seq_n_tokens)[rows]
    return Counts(
        [lang],
        seq.astype(np.int64).sum(axis=0)[None],
        tok.sum(axis=0)[None],
        act_sum=np.zeros((1, 2, 3, 7)),
        act_sqsum=np.zeros((1, 2, 3, 7)),
        seq_n_active=seq,
        seq_n_tokens=tok,
        seq_language=[lang] * len(rows),
        seq_id=[(full.seq_id or [])[r] for r in rows],
        seq_index=rows,
    )


@pytest.fixture
def counts_factory() -> Callable[..., Counts]:
    return make_counts


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter; fail the test with its stderr if it fails."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def write_reference_files(
    directory: Path, langs: Sequence[str], *, shape: tuple[int, int] = (3, 8), seed: int = 0
) -> None:
    """Reference-format (njunlp) activation files, full and prefix, for ``langs``."""
    import torch

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        prefix = rng.integers(0, 50, size=shape)
        full = prefix + rng.integers(0, 80, size=shape)
        full[0, 0] = max(prefix[0, 0] - 3, 0)  # a negative difference, as in real files
        torch.save(
            {"total_tokens": 200, "over_zero": torch.from_numpy(full.astype(np.int64))},
            directory / f"activation.{lang}.t.pt",
        )
        torch.save(
            {"total_tokens": 60, "over_zero": torch.from_numpy(prefix.astype(np.int64))},
            directory / f"prefix.activation.{lang}.t.pt",
        )


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the command line in-process: exit code, stdout, stderr."""
    from langneurons.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def rerecord(path: Path, *arrays: str) -> None:
    """Record the chunks of ``arrays`` in their manifests as they are now: what a writer outside
    langneurons that kept the manifests would leave (so the count checks, not the manifest, speak).
    """
    import zarr.storage

    from langneurons.store import _manifest

    zstore = zarr.storage.LocalStore(path)
    for name in arrays:
        _manifest.rebind(zstore, zarr.open_array(zstore, path=name))


def v1_store(tmp: Path) -> Path:
    """A schema-version-1 store directory, unpacked from the one langneurons 0.1 wrote."""
    import zipfile

    path = tmp / "old.zarr"
    with zipfile.ZipFile(V1_ZIP) as zf:
        zf.extractall(path)
    return path


def other_version_store(path: Path, version: int = 99) -> Path:
    """A new, empty store whose root claims another schema version."""
    import json

    from langneurons.store import create_store

    create_store(path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["langneurons"]["schema_version"] = version
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


TEXTS = {
    "en": ("How many apples are left?", "Ten minus four is six, so six apples are left."),
    "de": ("Wie viele Äpfel bleiben übrig?", "Zehn minus vier ist sechs."),
    "zh": ("还剩下多少个苹果？", "十减四等于六，所以还剩六个。"),
}


def write_data(path: Path, n_items: int = 4) -> Path:
    """A small parallel JSONL corpus with varied lengths (so batches need padding)."""
    lines = []
    for lang, (prompt, response) in TEXTS.items():
        for i in range(n_items):
            lines.append(
                {
                    "language": lang,
                    "id": f"q{i}",
                    "prompt": prompt + " " * (i % 2) + "?" * i,
                    "response": response + "!" * (3 * i),
                }
            )
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return path


def write_heldout(path: Path, n_items: int = 2) -> Path:
    """Evaluation records held out from ``write_data``'s: other ids, other texts."""
    lines = [json.loads(line) for line in write_data(path, n_items).read_text().splitlines()]
    for line in lines:
        line["id"] = "e" + line["id"][1:]
        line["response"] = line["response"] + " ok"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return path


def moe_and_dense_runs(root: Path, seed: int) -> dict[str, Path]:
    """A tiny Qwen2-MoE (``model``) and a tiny Llama (``dense``), both hidden 16, extracted with
    per-sequence counts from :func:`write_data`'s corpus into runs "moe" and "dense" of one
    ``store``, and :func:`write_heldout`'s evaluation records (``heldout``)."""
    from langneurons.extract.engine import extract
    from langneurons.extract.tiny import tiny_model

    model = tiny_model("qwen2_moe", seed=seed, path=root / "m", hidden=16, intermediate=8)
    dense = tiny_model("llama", seed=seed, path=root / "llama", hidden=16, intermediate=12)
    corpus = write_data(root / "corpus.jsonl", n_items=2)
    heldout = write_heldout(root / "heldout.jsonl", n_items=2)
    store = root / "s.zarr"
    kw = {"device": "cpu", "dtype": "float32", "progress": False, "per_sequence": True}
    extract(model, corpus, store, "moe", **kw)
    extract(dense, corpus, store, "dense", **kw)
    return {"model": model, "dense": dense, "heldout": heldout, "store": store}
