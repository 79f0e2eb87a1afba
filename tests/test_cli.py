"""The command line: import, identify, masks, entry points, --debug (bad input: test_bad_input)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from langneurons.store import open_store

from .conftest import run_cli, write_reference_files

torch = pytest.importorskip("torch")

LANGS = ["en", "de", "fr"]


@pytest.fixture
def imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    write_reference_files(tmp_path / "pt", LANGS)
    store = tmp_path / "s.zarr"
    code, out, err = run_cli(
        capsys, "import", "njunlp", tmp_path / "pt", "--tag", "t", "--languages", ",".join(LANGS),
        "--store", store, "--run", "m/base", "--model", "toy",
    )  # fmt: skip
    assert code == 0, err
    assert "imported 3 language(s)" in out
    assert "clamped 3 negative full-minus-prefix cell(s) to 0" in out
    return store


def test_import_info_validate(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "info", imported)
    assert code == 0 and "run m/base" in out and "3 layers x 8 neurons" in out
    code, out, _ = run_cli(capsys, "info", imported, "--json")
    data = json.loads(out)
    assert data["runs"]["m/base"]["languages"] == LANGS
    assert data["runs"]["m/base"]["attrs"]["provenance"]["format"] == "njunlp"
    code, out, _ = run_cli(capsys, "validate", imported)
    assert (code, out.strip()) == (0, f"ok: 1 run(s) valid in {imported}")


def test_identify_json_mask_export_and_import(
    imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask_file = tmp_path / "mask.pt"
    code, out, err = run_cli(
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
    code, out, err = run_cli(
        capsys, "import", "mask", mask_file, "--store", imported, "--run", "m/base",
        "--name", "exported",
    )  # fmt: skip
    assert code == 0, err
    back = store.open_result("m/base", "identification", "exported")
    np.testing.assert_array_equal(back["mask"].values, saved["mask"].values)
    code, out, _ = run_cli(capsys, "info", imported)
    assert "identification exported, ternary" in out
    # an earlier mask export is replaced by a new one (any other existing file is refused)
    code, out, err = run_cli(
        capsys, "identify", imported, "--run", "m/base", "--method", "lape", "--top-rate", "0.5",
        "--name", "again", "--export-mask", mask_file,
    )  # fmt: skip
    assert code == 0, err
    again = store.open_result("m/base", "identification", "again")
    lape = [[np.flatnonzero(row) for row in lang] for lang in again["mask"].transpose(
        "language", "layer", "neuron").values]  # fmt: skip
    from langneurons.extract import load_mask

    assert all(
        np.array_equal(a, b)
        for got, want in zip(load_mask(mask_file), lape, strict=True)
        for a, b in zip(got, want, strict=True)
    )


def test_identify_lape_and_fixed_lambda(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "identify", imported, "--run", "m/base", "--method", "lape",
                          "--top-rate", "0.2", "--name", "lape-test")  # fmt: skip
    assert code == 0, err
    assert re.search(
        r"\n  lape: [1-5] neurons selected \(\d+ of them assigned to no language\), tau 0\.\d+\n",
        out,
    )
    assert "saved at m/base/identification/lape-test" in out
    code, out, err = run_cli(capsys, "identify", imported, "--run", "m/base", "--lambda", "0.01",
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


def test_a_permission_error_names_the_users_path_not_our_temporary_one() -> None:
    from langneurons.cli import permission_line

    tmp = PermissionError(13, "Permission denied", "/x/.out.zip.langneurons-export-123-ab12.tmp")
    assert permission_line(tmp) == (
        "permission denied for '/x/out.zip' (Permission denied); choose a path you can write, "
        "or change its permissions"
    )
    plain = PermissionError(13, "Permission denied", "/x/s.zarr/m")
    assert permission_line(plain) is not None and "'/x/s.zarr/m'" in permission_line(plain)
    assert permission_line(PermissionError("no file")) is None


def test_descriptive_tests_are_not_called_significant(
    imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Token counts only: the p-values rank neurons; the headline does not call them tests that
    came out significant, and says the inference is descriptive."""
    code, out, err = run_cli(capsys, "stats", "tests", imported, "--run", "m/base", "--no-save")
    assert code == 0, err
    assert "neuron x language tests below the FDR threshold" in out
    assert "tests significant" not in out and "inference: descriptive" in out
