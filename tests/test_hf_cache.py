"""Hugging Face model ids: resolved from the local cache offline, downloaded only when allowed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from langneurons.errors import InputFormatError, ParameterError  # noqa: E402
from langneurons.extract.engine import extract, load_model  # noqa: E402
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import open_store  # noqa: E402

from .conftest import run_cli, write_data  # noqa: E402

pytestmark = pytest.mark.requires_torch

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model("llama", seed=1, path=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.jsonl", n_items=2)


def cache_model(hub: Path, model: Path, repo: str, commit: str, ref: str = "main") -> Path:
    """Lay out ``model`` in a Hugging Face cache at ``hub`` as ``repo`` at ``commit``."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    shutil.copytree(model, snapshot)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline cache (HF_HUB_CACHE) holding org/tiny; the working folder has no org/."""
    cache = tmp_path / "hub"
    cache_model(cache, tiny, "org/tiny", COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


def _arrays(store: Path, run: str = "r") -> dict[str, np.ndarray]:
    ds = open_store(store).open_run(run).load()
    return {name: ds[name].values for name in ds.data_vars}


def test_an_id_in_the_cache_loads_and_is_recorded(hub: Path, tmp_path: Path) -> None:
    loaded = load_model("org/tiny", device="cpu", dtype="float32")
    snapshot = hub / "models--org--tiny" / "snapshots" / COMMIT
    assert loaded.identity["model"] == "org/tiny"
    assert loaded.identity["revision"] == COMMIT
    assert Path(loaded.identity["snapshot"]).resolve() == snapshot.resolve()


def test_extract_by_id_equals_extract_by_path(
    hub: Path, tiny: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "--quiet", "extract", "--model", "org/tiny", "--data", data,
        "--store", tmp_path / "id.zarr", "--run", "r", "--device", "cpu", "--dtype", "float32",
    )  # fmt: skip
    assert code == 0, err
    extract(tiny, data, tmp_path / "path.zarr", "r", device="cpu", dtype="float32", progress=False)
    by_id, by_path = _arrays(tmp_path / "id.zarr"), _arrays(tmp_path / "path.zarr")
    for name in by_path:
        assert by_id[name].tobytes() == by_path[name].tobytes(), name
    meta = open_store(tmp_path / "id.zarr").run_metadata("r")
    assert meta.model == "org/tiny" and meta.revision == COMMIT
    identity = meta.provenance["identity"]
    assert identity["revision"] == COMMIT and identity["snapshot"].endswith(COMMIT)
    # the id of the same snapshot resumes it
    report = extract("org/tiny", data, tmp_path / "id.zarr", "r", device="cpu",
                     dtype="float32", resume=True, progress=False)  # fmt: skip
    assert report["units_done"] == 0 and report["units_skipped"] == 3


def test_hf_home_is_respected(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_model(tmp_path / "home" / "hub", tiny, "org/tiny", COMMIT)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert load_model("org/tiny", device="cpu").identity["revision"] == COMMIT


def test_revisions(hub: Path, tmp_path: Path) -> None:
    other = tiny_model("llama", seed=2, path=tmp_path / "other", layers=3)
    cache_model(hub, other, "org/tiny", OTHER, ref="v2")
    assert load_model("org/tiny", revision="v2", device="cpu").identity["revision"] == OTHER
    assert load_model("org/tiny", revision="v2", device="cpu").n_layers == 3
    assert load_model("org/tiny", revision=COMMIT, device="cpu").identity["revision"] == COMMIT
    with pytest.raises(
        InputFormatError,
        match=r"^model 'org/tiny' at revision 'v9' is not a local path and not in the Hugging "
        r"Face cache \(looked in .*models--org--tiny\); pass --allow-download",
    ):
        load_model("org/tiny", revision="v9", device="cpu")
    with pytest.raises(ParameterError, match=r"--revision 'v2' applies to Hugging Face ids"):
        load_model(tmp_path / "other", revision="v2")


def test_a_local_folder_wins_over_an_id(hub: Path, tiny: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny, tmp_path / "org" / "tiny")
    loaded = load_model("org/tiny", device="cpu")
    assert loaded.identity["revision"] == "" and loaded.identity["snapshot"] == ""


NOT_CACHED = (
    r"model 'org/absent' is not a local path and not in the Hugging Face cache \(looked in "
    r".*hub/models--org--absent\); pass --allow-download to download it, or give a local "
    r"directory saved with save_pretrained"
)


def test_an_id_not_in_the_cache_names_both_fixes(
    hub: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputFormatError, match="^" + NOT_CACHED + "$"):
        load_model("org/absent")
    code, out, err = run_cli(
        capsys, "extract", "--model", "org/absent", "--data", data,
        "--store", tmp_path / "s.zarr", "--run", "r",
    )  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch("langneurons: error: " + NOT_CACHED, lines[0]), err
    assert not (tmp_path / "s.zarr").exists()
    assert not (hub / "models--org--absent").exists()  # nothing was made in the cache


def test_allow_download_while_offline(hub: Path) -> None:
    with pytest.raises(
        InputFormatError,
        match=r"^model 'org/absent' is not a local path and not in the Hugging Face cache "
        r"\(looked in .*\); HF_HUB_OFFLINE is set, so --allow-download cannot fetch it; unset "
        r"HF_HUB_OFFLINE, or give a local directory saved with save_pretrained$",
    ):
        load_model("org/absent", allow_download=True)
    # a cached id needs no download, offline or not
    assert load_model("org/tiny", allow_download=True).identity["revision"] == COMMIT


def test_allow_download_fetches_only_what_loading_needs(
    hub: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download branch, without a network: huggingface_hub's snapshot_download is faked."""
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def fake(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(cache_model(hub, tiny, repo_id, OTHER))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(InputFormatError, match="pass --allow-download to download it"):
        load_model("org/new")
    assert calls[-1]["local_files_only"] is True  # without the flag nothing is fetched
    loaded = load_model("org/new", allow_download=True, device="cpu")
    assert loaded.identity["revision"] == OTHER
    asked = calls[-1]
    assert asked["local_files_only"] is False and asked["cache_dir"] == hub
    patterns = asked["allow_patterns"]
    assert isinstance(patterns, list) and "*.safetensors" in patterns and "*.py" not in patterns

    def offline(repo_id: str, **kwargs: object) -> str:
        raise OSError("Connection refused\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        InputFormatError,
        match=r"^cannot download model 'org/other': Connection refused; check the id and the "
        r"network, or give a local directory saved with save_pretrained$",
    ):
        load_model("org/other", allow_download=True)
