"""Bad input, table-driven: every case has its pinned one-line message and exit code, and the
proof that nothing was left half-written (no new file, no changed file, no new store).

``CLI`` cases run the command line in-process (exit 1: a langneurons error, 2: a usage error).
``API`` cases call the library and pin the exception type and message.
"""

from __future__ import annotations

import json
import pickle
import re
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from langneurons import errors
from langneurons.store import Counts, create_store, import_zip, migrate_store, open_store

from .conftest import (
    V1_ZIP,
    make_counts,
    other_version_store,
    rerecord,
    run_cli,
    v1_store,
    write_reference_files,
)

torch = pytest.importorskip("torch")

LANGS = ["en", "de", "fr"]


# --------------------------------------------------------------------------- input builders


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
    rerecord(path, "r/n_active")  # an edit the manifest agrees with: the counts must tell
    return path


def _store(tmp: Path) -> Path:
    path = tmp / "imp.zarr"
    if not path.exists():
        store = create_store(path)
        store.create_run("r", n_layers=3, n_neurons=7, counts=make_counts(LANGS))
    return path


def _damaged_store(tmp: Path) -> Path:
    path = _store(tmp)
    (path / "r" / "n_active" / "c" / "1" / "1" / "0" / "0").unlink()
    return path


def _pickled(tmp: Path) -> Path:
    write_reference_files(tmp / "pt", LANGS)
    with open(tmp / "pt" / "activation.de.t.pt", "wb") as fh:
        pickle.dump({"total_tokens": 5, "over_zero": Path("x")}, fh)
    return tmp / "pt"


def _missing_prefix(tmp: Path) -> Path:
    write_reference_files(tmp / "pt", LANGS)
    (tmp / "pt" / "prefix.activation.fr.t.pt").unlink()
    return tmp / "pt"


def _shapes_differ(tmp: Path) -> Path:
    write_reference_files(tmp / "pt", ["en", "de"])
    write_reference_files(tmp / "pt", ["fr"], shape=(3, 9))
    return tmp / "pt"


def _negative_total(tmp: Path) -> Path:
    write_reference_files(tmp / "pt", LANGS)
    over = torch.zeros((3, 8), dtype=torch.int64)
    torch.save({"total_tokens": -4, "over_zero": over}, tmp / "pt" / "prefix.activation.de.t.pt")
    return tmp / "pt"


def _reference(tmp: Path) -> Path:
    write_reference_files(tmp / "pt", LANGS)
    return tmp / "pt"


def _lape_file(tmp: Path) -> Path:
    path = tmp / "lape.en.pt"
    torch.save({"n": 10, "over_zero": torch.zeros((3, 8), dtype=torch.int64)}, path)
    return path


def _mask_file(tmp: Path, layers: int) -> Path:
    from langneurons.extract import save_mask

    path = tmp / "mask.pt"
    save_mask(
        path, [[np.array([0, 1])] * layers, [np.array([2])] * layers, [np.array([], int)] * layers]
    )
    return path


def _zip_with(tmp: Path, name: str, *, link: bool = False) -> Path:
    open_store(_store(tmp)).export_zip(tmp / "shared.zip")
    with zipfile.ZipFile(tmp / "shared.zip", "a") as zf:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd" if link else b"pwned")
    return tmp / "shared.zip"


def _a_file(tmp: Path, name: str = "afile") -> Path:
    (tmp / name).write_text("not a folder")
    return tmp / name


def _a_dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    (tmp / name / "mine.txt").write_text("mine")
    return tmp / name


def _import(
    directory_factory: Callable[[Path], Path], langs: str = "en,de,fr", run: str = "m/base"
):
    def args(tmp: Path) -> list[object]:
        return ["import", "njunlp", directory_factory(tmp), "--tag", "t", "--languages", langs,
                "--store", tmp / "new.zarr", "--run", run]  # fmt: skip

    return args


_OK = b'{"language": "en", "prompt": "a", "response": "b", "id": "1"}\n'


def _extract(data: bytes, *extra: str, config: dict[str, Any] | None = None):
    def args(tmp: Path) -> list[object]:
        (tmp / "empty").mkdir(exist_ok=True)
        if config is not None:
            (tmp / "empty" / "config.json").write_text(json.dumps(config))
        (tmp / "data.jsonl").write_bytes(data)
        return ["extract", "--model", tmp / "empty", "--data", tmp / "data.jsonl",
                "--store", tmp / "new.zarr", "--run", "r", *extra]  # fmt: skip

    return args


# --------------------------------------------------------------------------- the CLI table
# (label, argv builder, exit code, pinned message: a regex matched against the one stderr line)
CLI = [
    # stores
    ("nonexistent store", lambda t: ["info", t / "missing.zarr"], 1,
     r"store '.*missing.zarr' does not exist; check the path"),
    ("directory that is not a store", lambda t: ["info", _not_a_store(t)], 1,
     r"'.*dir' is not a Zarr v3 store \(no zarr.json\)"),
    ("store of a newer schema version",
     lambda t: ["validate", other_version_store(t / "v99.zarr")], 1,
     r"has schema version 99 but this langneurons reads version 2; install the langneurons"),
    ("store of an older schema version", lambda t: ["info", v1_store(t)], 1,
     r"has schema version 1, older than version 2 .*; upgrade it with `langneurons migrate "),
    ("migrating a current store", lambda t: ["migrate", _store(t)], 1,
     r"already has schema version 2; nothing to migrate"),
    ("counts above totals in a store", lambda t: ["validate", _over_total_store(t)], 1,
     r"invalid: run 'r': n_active exceeds n_tokens for 'en' role 'response' at 1 cells"),
    ("missing chunk file", lambda t: ["identify", _damaged_store(t), "--run", "r", "--role",
                                      "all"], 1,
     r"run 'r', array 'n_active': chunk c/1/1/0/0 is missing; the store is damaged"),
    ("unknown run", lambda t: ["identify", _over_total_store(t), "--run", "nope"], 1,
     r"run 'nope' is not in store"),
    ("run name with ..", _import(_reference, run="../evil"), 1,
     r"run name '../evil' contains '..'; use plain components"),
    ("absolute run name", _import(_reference, run="/etc/evil"), 1,
     r"run name '/etc/evil' is absolute"),
    ("export to a non-zip name", lambda t: ["export", _store(t), t / "out.tar"], 1,
     r"export target '.*out.tar' must end in .zip"),
    ("zip-slip member on import", lambda t: ["import", "zip", _zip_with(t, "../x.txt"),
                                             "--store", t / "new.zarr"], 1,
     r"member '../x.txt' would escape the store \(absolute, '..' or drive\); refusing"),
    ("link member on import", lambda t: ["import", "zip", _zip_with(t, "r/l", link=True),
                                         "--store", t / "new.zarr"], 1,
     r"member 'r/l' is a link; refusing the archive"),
    # imports
    ("missing prefix file", _import(_missing_prefix), 1,
     r"prefix.activation.fr.t.pt does not exist"),
    ("language list length mismatch (lape)",
     lambda t: ["import", "lape", _lape_file(t), "--languages", "en,de", "--store",
                t / "new.zarr", "--run", "r"], 1,
     r"1 files but 2 languages; give one file per language, in the same order"),
    ("shapes differ between languages", _import(_shapes_differ), 1,
     r"language 'fr' has over_zero of shape \(3, 9\) but 'en' has \(3, 8\); all languages"),
    ("negative totals", _import(_negative_total), 1,
     r"prefix.activation.de.t.pt: 'total_tokens' is -4; token totals must be >= 0"),
    ("duplicate language", _import(_reference, langs="en,de,en"), 1,
     r"language 'en' is given twice; list each language once"),
    ("pickled objects refused", _import(_pickled), 1,
     r"holds pickled Python objects beyond tensors.*weights_only=True"),
    ("mask of the wrong shape", lambda t: ["import", "mask", _mask_file(t, layers=5), "--store",
                                           _store(t), "--run", "r", "--name", "x"], 1,
     r"mask list entry for language 'en' has 5 layers, expected 3"),
    # corpora
    ("corpus not UTF-8", _extract(_OK + b"\xff\xfe bad\n"), 1,
     r"data.jsonl:2: not valid UTF-8 \(byte 0xff at column 1\); save the file as UTF-8"),
    ("corpus malformed JSON", _extract(b'{"language": "en", "prompt": \n'), 1,
     r"data.jsonl:1:\d+: malformed JSON \(Expecting value\); each line must hold one JSON"),
    ("corpus missing field", _extract(b'{"language": "en", "prompt": "a", "id": "1"}\n'), 1,
     r"data.jsonl:1: missing field 'response'; each record needs language, prompt, response"),
    ("corpus empty response", _extract(b'{"language": "en", "prompt": "a", "response": " ", '
                                       b'"id": "1"}\n'), 1,
     r"data.jsonl:1: field 'response' is empty; give non-empty text"),
    ("corpus unknown language", _extract(b'{"language": "xx", "prompt": "a", "response": "b", '
                                         b'"id": "1"}\n'), 1,
     r"data.jsonl:1: unknown language 'xx' \(did you mean"),
    # models
    ("model directory without config", _extract(_OK), 1,
     r"model directory '.*empty' has no config.json; point --model to a directory saved"),
    ("GGUF file missing", _extract(_OK, "--gguf-file", "m.gguf"), 1,
     r"GGUF file '.*m.gguf' does not exist; check --model DIR and --gguf-file FILE"),
    ("model code without --trust-remote-code", _extract(_OK, config={"model_type": "llama",
     "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomModel"}}), 1,
     r"model '.*empty' ships its own code \(auto_map in config.json\); rerun with "
     r"--trust-remote-code if you trust it"),
    # parameters
    ("shard out of range", _extract(_OK, "--shard", "5/2"), 1,
     r"--shard 5/2 is out of range; use I/N with 0 <= I < N"),
    ("bad rate", lambda t: ["identify", _store(t), "--run", "r", "--top-rate", "1.5"], 1,
     r"--top-rate must be in \(0, 1\], got 1.5"),
    ("lambda not a finite number", lambda t: ["identify", _store(t), "--run", "r", "--lambda",
                                              "nan"], 1,
     r"--lambda must be 'auto' or a finite number >= 0, got nan"),
    ("a lambda for LAPE", lambda t: ["identify", _store(t), "--run", "r", "--method", "lape",
                                     "--lambda", "0.05"], 1,
     r"--lambda does not apply to --method lape \(it is the ternary rule's\); drop it"),
    ("bad lambda", lambda t: ["identify", _store(t), "--run", "r", "--lambda", "x"], 2,
     r"'x' is neither 'auto' nor a number"),
    ("no valid lambda", lambda t: ["identify", _store(t), "--run", "r", "--top-rate", "1",
                                   "--bar", "0.1"], 1,
     r"no lambda in \[0.0, 0.2\] \(eps 0.001\) leaves every selected neuron short of all 3 "),
    ("malformed lambda range", lambda t: ["identify", _store(t), "--run", "r",
                                          "--lambda-range", "0.2"], 2,
     r"'0.2' is not LO,HI \(e.g. 0,0.2\)"),
    ("more stages than layers", lambda t: ["stats", "stages", _store(t), "--run", "r",
                                           "--n-stages", "9", "--n-boot", "0"], 1,
     r"n_stages=9 is larger than the number of layers \(3\)"),
    ("one bootstrap replicate", lambda t: ["stats", "stages", _store(t), "--run", "r",
                                           "--n-boot", "1"], 1,
     r"n_boot must be 0 \(no bootstrap\) or an integer >= 2, got 1: one replicate gives no "
     r"interval"),
    ("negative bootstrap replicates", lambda t: ["compare", "runs", _store(t), "--base", "r",
                                                 "--aligned", "r", "--n-boot", "-1"], 1,
     r"n_boot must be an integer >= 0, got -1"),
    ("tests without per-sequence counts", lambda t: ["stats", "tests", _store(t), "--run", "r",
                                                     "--method", "cluster"], 1,
     r"method='cluster' needs per-sequence counts \(seq_n_active\), which this run lacks"),
    ("export over an existing file", lambda t: ["export", _store(t), _a_file(t, "mine.zip")],
     1, r"'.*mine.zip' already exists; give a new path for the zip export \(nothing is "
     r"replaced\)"),
    ("export onto a folder named .zip", lambda t: ["export", _store(t), _a_dir(t, "d.zip")], 1,
     r"'.*d.zip' already exists; give a new path for the zip export"),
    ("mask export over a file that is no mask", lambda t: ["identify", _store(t), "--run", "r",
                                                         "--export-mask", _a_file(t, "n.txt")],
     1, r"'.*n.txt' already exists and is not a LAPE mask file; give a new path for the mask "
     r"\(nothing is replaced\)"),
    ("mask export onto a folder", lambda t: ["identify", _store(t), "--run", "r",
                                             "--export-mask", _a_dir(t, "masks")],
     1, r"mask file '.*masks' is a folder; give a file path"),
    ("demo with one language", lambda t: ["demo", "--out", t / "dm", "--languages", "en"], 1,
     r"the demo needs at least 2 languages \(identification compares them\), got 1"),
    ("demo with one bootstrap replicate", lambda t: ["demo", "--out", t / "dm", "--n-boot",
                                                     "1"], 1,
     r"--n-boot must be an integer >= 2 \(the demo's bootstrap statistics\), got 1"),
    ("import a zip that does not exist", lambda t: ["import", "zip", t / "none.zip", "--store",
                                                    t / "new.zarr"], 1,
     r"zip '.*none.zip' does not exist; check the path"),
    ("negative label swaps (usage)", lambda t: ["compare", "runs", _store(t), "--base", "r",
                                                "--aligned", "r", "--n-swap", "-1"], 2,
     r"Invalid value for '--n-swap': -1 is not in the range x>=0"),
    ("an unknown trained language", lambda t: ["compare", "runs", _store(t), "--base", "r",
                                               "--aligned", "r", "--trained-languages", "en,xx"],
     1, r"trained_languages has 'xx', which is not a language of the runs"),
    ("checkpoints of one run", lambda t: ["compare", "checkpoints", _store(t), "--runs", "r,r"],
     1, r"--runs must name at least 2 distinct runs in order, got 'r,r'"),
    ("report into a file", lambda t: ["report", _store(t), "--out", _a_file(t)], 1,
     r"out_dir '.*afile' is a file; give a folder path for the report"),
    ("unknown role (usage)", lambda t: ["identify", _store(t), "--run", "r", "--role", "both"],
     2, r"Invalid value for '--role': 'both' is not one of 'response', 'prompt', 'all'"),
    ("missing required option (usage)", lambda t: ["identify", _store(t)], 2,
     r"Missing option '--run'"),
    # Hugging Face ids and resumable ablations
    ("Hugging Face id not in the cache",
     lambda t: ["extract", "--model", "langneurons-tests/absent", *_extract(_OK)(t)[3:]], 1,
     r"model 'langneurons-tests/absent' is not a local path and not in the Hugging Face cache "
     r"\(looked in .*models--langneurons-tests--absent\); pass --allow-download to download it, "
     r"or give a local directory saved with save_pretrained"),
    ("finished ablation without --resume", lambda t: _ablate(t, "nll"), 1,
     r"ablation 'lape' of run 'r' already exists; choose another --name, or pass --resume to "
     r"reuse it"),
    ("interrupted ablation without --resume", lambda t: _ablate(t, "unit_done"), 1,
     r"ablation 'lape' of run 'r' was interrupted after 3 of 10 units; pass --resume to "
     r"complete it, or choose another --name"),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(("label", "args", "exit_code", "message"), CLI, ids=[c[0] for c in CLI])
def test_cli_bad_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: str,
    args: Callable[[Path], list[object]],
    exit_code: int,
    message: str,
) -> None:
    argv = args(tmp_path)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == exit_code, (label, out, err)
    assert "Traceback" not in err
    assert re.search(message, err), (label, err)
    lines = [line for line in err.splitlines() if line.strip()]
    if exit_code == 1:
        assert len(lines) == 1, err  # one line: the error and its fix
        assert lines[0].startswith(("langneurons: error: ", "invalid: ")), err
    else:
        assert lines[0].startswith("Usage:") and lines[-1].startswith("Error: "), err
    # nothing half-written: no new file or folder, nothing changed, no store made
    assert _snapshot(tmp_path) == before, label
    assert not (tmp_path / "new.zarr").exists()


# --------------------------------------------------------------------------- the API table
def _run(tmp: Path, **kw: Any) -> xr.Dataset:
    return open_store(_store(tmp)).open_run("r", **kw)


def _uneven_sequences(tmp: Path) -> None:
    c = make_counts(["en", "de"], sequences=2)
    seq = np.array(c.seq_n_active)
    seq[0, 1, 0, 0] += 1  # one more active token in a sequence than in its language
    Counts(c.languages, c.n_active, c.n_tokens, seq_n_active=seq, seq_n_tokens=c.seq_n_tokens,
           seq_language=c.seq_language, seq_id=c.seq_id)  # fmt: skip


def _api_counts(tmp: Path) -> None:
    Counts(["en"], np.zeros((1, 2, 3, 7), np.int64), -np.ones((1, 2), np.int64))


API: list[tuple[str, Callable[[Path], object], type[Exception], str]] = [
    ("open a missing store", lambda t: open_store(t / "none.zarr"), errors.StoreNotFoundError,
     r"store '.*none.zarr' does not exist; check the path"),
    ("write a zip store", lambda t: create_store(t / "x.zip"), errors.InvalidNameError,
     r"cannot write into zip '.*x.zip'; create a directory store and export it"),
    ("run name escaping the store", lambda t: open_store(_store(t), mode="r+").create_run(
        "a/../../b", n_layers=1, n_neurons=1), errors.InvalidNameError,
     r"run name 'a/../../b' contains '..'"),
    ("result name escaping the run", lambda t: open_store(_store(t), mode="r+").save_result(
        "r", "stats", "/abs", xr.Dataset()), errors.InvalidNameError,
     r"result name '/abs' is absolute"),
    ("unknown result kind", lambda t: open_store(_store(t), mode="r+").save_result(
        "r", "bogus", "x", xr.Dataset()), errors.InvalidNameError,
     r"result kind 'bogus' is not one of"),
    ("result that is a DataArray", lambda t: open_store(_store(t), mode="r+").save_result(
        "r", "stats", "x", xr.DataArray([1.0], name="x")), errors.ParameterError,
     r"a result must be an xarray.Dataset or a langneurons PlainDataset, got DataArray; make "
     r"it one with da.to_dataset\(name=...\)"),
    ("result that is a dict", lambda t: open_store(_store(t), mode="r+").save_result(
        "r", "stats", "x", {"x": 1}), errors.ParameterError,  # type: ignore[arg-type]
     r"a result must be an xarray.Dataset or a langneurons PlainDataset, got dict$"),
    ("per-sequence counts that do not add up", _uneven_sequences, errors.StoreValidationError,
     r"seq_n_active summed per language differs from n_active \(language 'en'\); the "
     r"per-sequence and per-language counts must come from the same tokens"),
    ("languages that differ only in case", lambda t: make_counts(["EN", "en"]),
     errors.StoreValidationError, r"languages 'EN' and 'en' differ only in case; language "
     r"codes are case-insensitive: give each language once"),
    ("a language label with a space", lambda t: make_counts(["e n"]),
     errors.StoreValidationError, r"language label 'e n' is invalid; use a non-empty code "
     r"without spaces"),
    ("negative token totals", _api_counts, errors.StoreValidationError,
     r"n_tokens holds negative token totals; totals must be >= 0"),
    ("counts of another model", lambda t: open_store(_store(t), mode="r+").merge_counts(
        "r", make_counts(["en"], layers=4)), errors.StoreValidationError,
     r"counts have 4 layers x 7 neurons but run 'r' has 3 x 7"),
    ("writing a read-only store", lambda t: open_store(_store(t)).merge_counts(
        "r", make_counts(["en"])), PermissionError,
     r"is open read-only; open it with mode='r\+' to write"),
    ("unknown result", lambda t: open_store(_store(t)).open_result("r", "identification", "x"),
     errors.RunNotFoundError, r"no identification result 'x' under run 'r' \(have: none\)"),
    ("migrate into an existing path", lambda t: migrate_store(V1_ZIP, _store(t)),
     errors.InvalidNameError, r"already exists; choose a new path"),
    ("import a zip into an existing store", lambda t: import_zip(V1_ZIP, _store(t)),
     errors.RunExistsError, r"already exists; give a new path for the store"),
    ("unknown identification method", lambda t: _identify(_run(t), "nope"),
     errors.ParameterError, r"method must be one of 'ternary', 'lape', got 'nope'"),
    ("run without n_tokens", lambda t: _identify(_run(t).drop_vars("n_tokens"), "lape"),
     errors.StoreValidationError, r"run has no variable 'n_tokens'; expected n_tokens"),
    ("a language label twice", lambda t: _identify(_run(t).assign_coords(
        language=["en", "en", "fr"]), "lape"), errors.ParameterError,
     r"language 'en' appears twice in the run's language labels; give each language its own "
     r"label with run.assign_coords\(language=\[...\]\)"),
    ("an empty language label", lambda t: _tests(_run(t).assign_coords(
        language=["en", " ", "fr"])), errors.ParameterError,
     r"language label 1 of the run is empty; give every language a name"),
    ("tests on a negative count", lambda t: _tests(_edited(_run(t), "n_active", -3)),
     errors.StoreValidationError,
     r"n_active is negative for language 'en' role 'response' at 1 cell; the store is corrupt"),
    ("tests on a count above its tokens", lambda t: _tests(_edited(_run(t), "n_active", 10**9)),
     errors.StoreValidationError, r"n_active exceeds n_tokens for language 'en' role 'response'"),
    ("tests on NaN token totals", lambda t: _tests(_edited(_run(t), "n_tokens", np.nan),
                                                   method="binomial"),
     errors.StoreValidationError, r"n_tokens is NaN for language 'en' role 'response'"),
    ("tests on per-sequence counts that do not add up", lambda t: _tests(_edited(
        _sequence_run(t), "seq_n_active", 50)), errors.StoreValidationError,
     r"run: seq_n_active of language 'en' does not sum to n_active; the store is corrupt"),
    ("probabilities of a language without tokens", lambda t: _probability(_edited(
        _run(t), "n_tokens", 0)), errors.ParameterError,
     r"n_tokens is 0 for language 'en' with role='response', so its activation probabilities "
     r"are undefined; choose another role \(--role\), or drop the language"),
    ("bootstrap of too few replicates", lambda t: _boot(_run(t)), errors.ParameterError,
     r"n_boot must be an integer >= 2, got 0"),
    ("alpha outside (0, 1)", lambda t: _tests(_run(t), alpha=2), errors.ParameterError,
     r"alpha must be a number in \(0, 1\), got 2"),
    ("corpus file missing", lambda t: _records(t / "none.jsonl"), errors.InputFormatError,
     r"corpus file '.*none.jsonl' does not exist; give the path of a JSON lines"),
    ("model path missing", lambda t: _load_model(t / "none"), errors.InputFormatError,
     r"model '.*none' does not exist; give a directory saved with save_pretrained"),
    ("revision of a local model path", lambda t: _load_model(t / "none", revision="v2"),
     errors.ParameterError, r"--revision 'v2' applies to Hugging Face ids \(org/name\), not to "
     r"the local path '.*none'; drop --revision"),
]  # fmt: skip


def _edited(run: xr.Dataset, name: str, value: float) -> xr.Dataset:
    """``run`` in memory, its first ``response`` cell of ``name`` set to ``value``."""
    run = run.load()
    data = run[name].values.astype(np.float64 if np.isnan(value) else run[name].dtype)
    at = (0, 1) + (0,) * (data.ndim - 2)  # [language or sequence 0, role "response", ...]
    data[at] = value
    return run.assign({name: (run[name].dims, data)})


def _sequence_run(tmp: Path) -> xr.Dataset:
    """A run with per-sequence counts (3 sequences per language) next to the table's store."""
    path = tmp / "seq.zarr"
    if not path.exists():
        counts = make_counts(LANGS, sequences=3)
        create_store(path).create_run("r", n_layers=3, n_neurons=7, counts=counts, sequences=True)
    return open_store(path).open_run("r")


def _identify(run: xr.Dataset, method: str) -> object:
    from langneurons.analysis import identify

    return identify(run, method, top_rate=0.2)  # type: ignore[arg-type]


def _boot(run: xr.Dataset) -> object:
    from langneurons.analysis import bootstrap_identification

    return bootstrap_identification(run, "lape", n_boot=0)


def _tests(run: xr.Dataset, **kw: Any) -> object:
    from langneurons.analysis import language_preference_tests

    return language_preference_tests(run, **kw)


def _probability(run: xr.Dataset) -> object:
    from langneurons.analysis import activation_probability

    return activation_probability(run)


def _records(path: Path) -> object:
    from langneurons.extract.corpus import read_records

    return read_records(path)


def _load_model(path: Path, **kw: Any) -> object:
    from langneurons.extract.engine import load_model

    return load_model(str(path), **kw)


@pytest.mark.parametrize(("label", "call", "error", "message"), API, ids=[a[0] for a in API])
def test_api_bad_input(
    tmp_path: Path, label: str, call: Callable[[Path], object], error: type, message: str
) -> None:
    _store(tmp_path)  # inputs exist before the snapshot
    _sequence_run(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(error) as info:
        call(tmp_path)
    text = str(info.value)
    assert re.search(message, text), (label, text)
    assert "\n" not in text, text
    if error is not PermissionError:
        assert isinstance(info.value, errors.LangneuronsError)
    assert _snapshot(tmp_path) == before, label


def test_the_table_is_large_enough() -> None:
    assert len(CLI) + len(API) >= 25
    assert len({c[0] for c in CLI} | {a[0] for a in API}) == len(CLI) + len(API)


def _ablate(tmp: Path, variable: str) -> list[object]:
    """`ablate` into a store holding an ablation of that name: finished (``nll``) or partial
    (``unit_done``)."""
    from langneurons.analysis import identify

    store = open_store(_store(tmp), mode="r+")
    store.save_result("r", "identification", "lape", identify(store.open_run("r"), "lape"))
    done = xr.Dataset({variable: (("deactivated", "evaluated"), np.zeros((1, 1)))})
    store.save_result("r", "ablation", "lape", done.assign_attrs(units_done=3, units_total=10))
    (tmp / "data.jsonl").write_bytes(_OK)
    return ["ablate", "--model", tmp / "empty", "--store", tmp / "imp.zarr", "--run", "r",
            "--identification", "lape", "--data", tmp / "data.jsonl"]  # fmt: skip
