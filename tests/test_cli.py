"""The command line: every bad input gives one line, a non-zero exit code, and writes nothing."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from langneurons.cli import main
from langneurons.store import create_store, open_store

from .conftest import make_counts

torch = pytest.importorskip("torch")

LANGS = ["en", "de", "fr"]


def _write_reference_files(directory: Path, langs: list[str], *, shape=(3, 8), seed=0) -> None:
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


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    _write_reference_files(tmp_path / "pt", LANGS)
    store = tmp_path / "s.zarr"
    code, out, err = _cli(
        capsys, "import", "njunlp", tmp_path / "pt", "--tag", "t", "--languages", ",".join(LANGS),
        "--store", store, "--run", "m/base", "--model", "toy",
    )  # fmt: skip
    assert code == 0, err
    assert "imported 3 language(s)" in out
    assert "clamped 3 negative full-minus-prefix cell(s) to 0" in out
    return store


def test_import_info_validate(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "info", imported)
    assert code == 0 and "run m/base" in out and "3 layers x 8 neurons" in out
    code, out, _ = _cli(capsys, "info", imported, "--json")
    data = json.loads(out)
    assert data["runs"]["m/base"]["languages"] == LANGS
    assert data["runs"]["m/base"]["attrs"]["provenance"]["format"] == "njunlp"
    code, out, _ = _cli(capsys, "validate", imported)
    assert (code, out.strip()) == (0, f"ok: 1 run(s) valid in {imported}")


def test_identify_json_mask_export_and_import(
    imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask_file = tmp_path / "mask.pt"
    code, out, err = _cli(
        capsys, "identify", imported, "--run", "m/base", "--top-rate", "0.2", "--bar", "0.8",
        "--lambda-range", "0,2", "--json", "--export-mask", mask_file,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    for key in ("method", "lambda", "tau", "selected", "appear", "per_language", "per_layer",
                "shared_by_n"):  # fmt: skip
        assert key in data
    assert data["selected"] == round(3 * 8 * 0.2)
    assert len(data["appear"]) == len(LANGS) + 1 and sum(data["appear"]) == data["selected"]
    assert sum(data["shared_by_n"]) == 3 * 8
    assert list(data["per_language"]) == LANGS
    assert set(data["per_layer"]) >= {"specific", "related", "general", "unassigned"}
    store = open_store(imported)
    saved = store.open_result("m/base", "identification", "ternary")
    assert saved.attrs["lambda"] == data["lambda"]
    code, out, err = _cli(
        capsys, "import", "mask", mask_file, "--store", imported, "--run", "m/base",
        "--name", "exported",
    )  # fmt: skip
    assert code == 0, err
    back = store.open_result("m/base", "identification", "exported")
    np.testing.assert_array_equal(back["mask"].values, saved["mask"].values)
    code, out, _ = _cli(capsys, "info", imported)
    assert "identification exported, ternary" in out


def test_identify_lape_and_fixed_lambda(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "identify", imported, "--run", "m/base", "--method", "lape",
                          "--top-rate", "0.2", "--name", "lape-test")  # fmt: skip
    assert code == 0, err
    assert re.match(r"lape: [1-5] neurons selected \(tau 0\.\d+\)\n", out)
    assert "saved at m/base/identification/lape-test" in out
    code, out, err = _cli(capsys, "identify", imported, "--run", "m/base", "--lambda", "0.01",
                          "--top-rate", "0.2", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["lambda"] == 0.01


def test_module_entry_point_and_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "langneurons", "--help"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0 and "identify" in proc.stdout and "import" in proc.stdout
    for sub in (["import", "njunlp"], ["identify"], ["info"], ["validate"], ["export"]):
        proc = subprocess.run([sys.executable, "-m", "langneurons", *sub, "--help"],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "langneurons", "--debug", "info", str(tmp_path / "nope")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "langneurons", "info", str(tmp_path / "nope")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------- bad input, pinned
def _other_version_store(tmp: Path) -> Path:
    path = tmp / "v99.zarr"
    create_store(path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["langneurons"]["schema_version"] = 99
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def _not_a_store(tmp: Path) -> Path:
    (tmp / "dir").mkdir()
    (tmp / "dir" / "notes.txt").write_text("hello")
    return tmp / "dir"


def _over_total_store(tmp: Path) -> Path:
    path = tmp / "over.zarr"
    store = create_store(path)
    store.create_run("r", n_layers=3, n_neurons=7, counts=make_counts(["en", "de"]))
    group = zarr.open_group(path, mode="r+", path="r", use_consolidated=False)
    group["n_active"][0, 1, 2, 3] = 10**6
    return path


def _pickled(tmp: Path) -> Path:
    _write_reference_files(tmp / "pt", LANGS)
    with open(tmp / "pt" / "activation.de.t.pt", "wb") as fh:
        pickle.dump({"total_tokens": 5, "over_zero": Path("x")}, fh)
    return tmp / "pt"


def _missing_prefix(tmp: Path) -> Path:
    _write_reference_files(tmp / "pt", LANGS)
    (tmp / "pt" / "prefix.activation.fr.t.pt").unlink()
    return tmp / "pt"


def _shapes_differ(tmp: Path) -> Path:
    _write_reference_files(tmp / "pt", ["en", "de"])
    _write_reference_files(tmp / "pt", ["fr"], shape=(3, 9))
    return tmp / "pt"


def _negative_total(tmp: Path) -> Path:
    _write_reference_files(tmp / "pt", LANGS)
    over = torch.zeros((3, 8), dtype=torch.int64)
    torch.save({"total_tokens": -4, "over_zero": over}, tmp / "pt" / "prefix.activation.de.t.pt")
    return tmp / "pt"


def _reference(tmp: Path) -> Path:
    _write_reference_files(tmp / "pt", LANGS)
    return tmp / "pt"


def _import(directory_factory, langs: str = "en,de,fr", run: str = "m/base"):
    def args(tmp: Path) -> list[object]:
        return ["import", "njunlp", directory_factory(tmp), "--tag", "t", "--languages", langs,
                "--store", tmp / "new.zarr", "--run", run]  # fmt: skip

    return args


_OK = b'{"language": "en", "prompt": "a", "response": "b", "id": "1"}\n'


def _extract(data: bytes, *extra: str):
    def args(tmp: Path) -> list[object]:
        (tmp / "empty").mkdir(exist_ok=True)
        (tmp / "data.jsonl").write_bytes(data)
        return [
            "extract",
            "--model",
            tmp / "empty",
            "--data",
            tmp / "data.jsonl",
            "--store",
            tmp / "new.zarr",
            "--run",
            "r",
            *extra,
        ]

    return args


def _a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder")
    return tmp / "afile"


BAD_INPUTS = [
    ("nonexistent path", lambda t: ["info", t / "missing.zarr"],
     r"store '.*missing.zarr' does not exist; check the path"),
    ("directory that is not a store", lambda t: ["info", _not_a_store(t)],
     r"'.*dir' is not a Zarr v3 store \(no zarr.json\)"),
    ("store of another schema version", lambda t: ["validate", _other_version_store(t)],
     r"has schema version 99 but this langneurons reads version 1"),
    ("run name with ..", _import(_reference, run="../evil"),
     r"run name '../evil' contains '..'; use plain components"),
    ("absolute run name", _import(_reference, run="/etc/evil"),
     r"run name '/etc/evil' is absolute"),
    ("missing prefix file", _import(_missing_prefix),
     r"prefix.activation.fr.t.pt does not exist"),
    ("language list length mismatch (lape)",
     lambda t: ["import", "lape", _lape_file(t), "--languages", "en,de", "--store",
                t / "new.zarr", "--run", "r"],
     r"1 files but 2 languages; give one file per language, in the same order"),
    ("shapes differ between languages", _import(_shapes_differ),
     r"language 'fr' has over_zero of shape \(3, 9\) but 'en' has \(3, 8\); all languages"),
    ("negative totals", _import(_negative_total),
     r"prefix.activation.de.t.pt: 'total_tokens' is -4; token totals must be >= 0"),
    ("duplicate language", _import(_reference, langs="en,de,en"),
     r"language 'en' is given twice; list each language once"),
    ("pickled objects refused", _import(_pickled),
     r"holds pickled Python objects beyond tensors.*weights_only=True"),
    ("counts above totals in a store", lambda t: ["validate", _over_total_store(t)],
     r"invalid: run 'r': n_active exceeds n_tokens for 'en' role 'response' at 1 cells"),
    ("unknown run", lambda t: ["identify", _over_total_store(t), "--run", "nope"],
     r"run 'nope' is not in store"),
    ("bad rate", lambda t: ["identify", _imported_store(t), "--run", "r", "--top-rate", "1.5"],
     r"top_rate must be in \(0, 1\], got 1.5"),
    ("bad lambda", lambda t: ["identify", _imported_store(t), "--run", "r", "--lambda", "x"],
     r"'x' is neither 'auto' nor a number"),
    ("no valid lambda", lambda t: ["identify", _imported_store(t), "--run", "r",
                                   "--top-rate", "1", "--bar", "0.1"],
     r"no lambda in \[0.0, 0.2\] \(eps 0.001\) leaves every selected neuron short of all 3 "),
    ("mask of the wrong shape", lambda t: ["import", "mask", _mask_file(t, layers=5), "--store",
                                           _imported_store(t), "--run", "r", "--name", "x"],
     r"mask list entry for language 'en' has 5 layers, expected 3"),
    ("export to a non-zip name", lambda t: ["export", _imported_store(t), t / "out.tar"],
     r"export target '.*out.tar' must end in .zip"),
    ("corpus not UTF-8", _extract(b'{"language": "en", "prompt": "a", "response": "b", "id": "1"}'
                                  b"\n\xff\xfe bad\n"),
     r"data.jsonl:2: not valid UTF-8 \(byte 0xff at column 1\); save the file as UTF-8"),
    ("corpus malformed JSON", _extract(b'{"language": "en", "prompt": \n'),
     r"data.jsonl:1:\d+: malformed JSON \(Expecting value\); each line must hold one JSON"),
    ("corpus missing field", _extract(b'{"language": "en", "prompt": "a", "id": "1"}\n'),
     r"data.jsonl:1: missing field 'response'; each record needs language, prompt, response"),
    ("corpus empty response", _extract(b'{"language": "en", "prompt": "a", "response": " ", '
                                       b'"id": "1"}\n'),
     r"data.jsonl:1: field 'response' is empty; give non-empty text"),
    ("corpus unknown language", _extract(b'{"language": "xx", "prompt": "a", "response": "b", '
                                         b'"id": "1"}\n'),
     r"data.jsonl:1: unknown language 'xx' \(did you mean"),
    ("model directory without config", _extract(_OK),
     r"model directory '.*empty' has no config.json; point --model to a directory saved"),
    ("GGUF file missing", _extract(_OK, "--gguf-file", "m.gguf"),
     r"GGUF file '.*m.gguf' does not exist; check --model DIR and --gguf-file FILE"),
    ("shard out of range", _extract(_OK, "--shard", "5/2"),
     r"--shard 5/2 is out of range; use I/N with 0 <= I < N"),
    ("report into a file", lambda t: ["report", _imported_store(t), "--out", _a_file(t)],
     r"out_dir '.*afile' is a file; give a folder path for the report"),
    ("more stages than layers", lambda t: ["stats", "stages", _imported_store(t), "--run", "r",
                                           "--n-stages", "9", "--n-boot", "0"],
     r"n_stages=9 is larger than the number of layers \(3\)"),
    ("malformed lambda range", lambda t: ["identify", _imported_store(t), "--run", "r",
                                          "--lambda-range", "0.2"],
     r"'0.2' is not LO,HI \(e.g. 0,0.2\)"),
]  # fmt: skip


def _lape_file(tmp: Path) -> Path:
    path = tmp / "lape.en.pt"
    torch.save({"n": 10, "over_zero": torch.zeros((3, 8), dtype=torch.int64)}, path)
    return path


def _imported_store(tmp: Path) -> Path:
    path = tmp / "imp.zarr"
    if not path.exists():
        store = create_store(path)
        store.create_run("r", n_layers=3, n_neurons=7, counts=make_counts(["en", "de", "fr"]))
    return path


def _mask_file(tmp: Path, layers: int) -> Path:
    from langneurons.extract._torchio import save_mask

    path = tmp / "mask.pt"
    save_mask(
        path, [[np.array([0, 1])] * layers, [np.array([2])] * layers, [np.array([], int)] * layers]
    )
    return path


@pytest.mark.parametrize(("label", "args", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, args, message: str
) -> None:
    argv = args(tmp_path)
    before = _snapshot(tmp_path)
    code, out, err = _cli(capsys, *argv)
    assert code != 0, (label, out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and "Traceback" not in err
    assert re.search(message, err), (label, err)
    if argv[0] != "validate":
        assert len(lines) == 1 or lines[0].startswith("Usage"), err
    # nothing half-written: no new store, no new files
    assert _snapshot(tmp_path) == before, label
    assert not (tmp_path / "new.zarr").exists()


def _snapshot(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
