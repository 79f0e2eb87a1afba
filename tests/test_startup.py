"""Start-up stays light: the front door and the command line import no heavy module until used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

HEAVY = ("xarray", "zarr", "scipy", "scipy.stats", "statsmodels", "torch", "matplotlib", "dask")


def _loaded(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_langneurons_and_its_errors_load_nothing_heavy() -> None:
    for code in ("import langneurons", "import langneurons.errors", "import langneurons.cli"):
        heavy = _loaded(code) & set(HEAVY)
        assert not heavy, f"{code} imports {sorted(heavy)}"


def test_help_loads_nothing_heavy() -> None:
    code = (
        "import sys\nfrom langneurons.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    heavy = _loaded(code) & set(HEAVY)
    assert not heavy, f"langneurons --help imports {sorted(heavy)}"


def test_public_names_still_resolve_and_register_the_accessor() -> None:
    code = (
        "import langneurons as ln, xarray as xr\n"
        "assert callable(ln.open_store) and callable(ln.identify)\n"
        "assert ln.SCHEMA_VERSION == 2 and ln.__version__\n"
        "assert hasattr(xr.Dataset, 'neurons')\n"
        "assert set(ln.__all__) <= set(dir(ln))\n"
        "try:\n    ln.nope\nexcept AttributeError as e:\n    print('ok', e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ok module 'langneurons' has no attribute 'nope'" in out.stdout
    # xarray imported first: ``import langneurons`` registers ds.neurons at once, as it always did
    code = "import xarray as xr\nimport langneurons\nassert hasattr(xr.Dataset, 'neurons')"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- info without zarr
def _stores(tmp: Path) -> dict[str, Path]:
    """Stores of every shape ``info`` summarises: results, a plan, links, an unreadable group."""
    import zarr

    from langneurons.analysis import identify
    from langneurons.store import create_store

    from .conftest import make_counts

    langs = ["en", "de", "zh-Hant", "ру"]
    full = tmp / "full.zarr"
    store = create_store(full)
    counts = make_counts(langs, layers=3, neurons=7, sequences=3, moments=True)
    store.create_run("m/base", n_layers=3, n_neurons=7, sequences=True, moments=True,
                     counts=counts)  # fmt: skip
    store.create_run("m/other", n_layers=3, n_neurons=7, counts=make_counts(langs[:2], seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = identify(store.open_run("m/base"), top_rate=0.2)
    store.save_result("m/base", "identification", "ternary", result)
    store.save_result("m/base", "compare", "vs-m_other/types", result)
    compare = full / "m" / "base" / "compare"
    shutil.copytree(compare / "vs-m_other", compare / ".hidden")  # left by a killed save
    (compare / "notes.txt").write_text("not a node")
    planned = tmp / "planned.zarr"
    create_store(planned).create_run(
        "m/x", n_layers=3, n_neurons=7, counts=make_counts(langs[:2]), planned_units=["u0", "u1"]
    )
    linked = tmp / "linked.zarr"
    results = create_store(linked)
    results.link_run("m/base", store)
    results.save_result("m/base", "stats", "mine", result)
    unreadable = tmp / "unreadable.zarr"
    create_store(unreadable).create_run("a/b", n_layers=3, n_neurons=7,
                                        counts=make_counts(langs[:2]))  # fmt: skip
    meta_file = unreadable / "a" / "b" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["schema_version"]
    meta_file.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec: we know
        zarr.consolidate_metadata(str(unreadable))
    many = tmp / "many.zarr"  # more languages than one chunk of labels holds
    codes = [f"l{i:03d}" for i in range(70)]
    create_store(many).create_run("m/b", n_layers=2, n_neurons=3,
                                  counts=make_counts(codes, layers=2, neurons=3))  # fmt: skip
    empty = tmp / "empty.zarr"
    create_store(empty)
    return {"full": full, "planned": planned, "linked": linked, "unreadable": unreadable,
            "many": many, "empty": empty}  # fmt: skip


def test_info_reads_the_json_as_the_store_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.cli._info import read_info
    from langneurons.cli.store import info_lines
    from langneurons.store import open_store

    from .conftest import run_cli

    for name, path in _stores(tmp_path).items():
        for url in (str(path), f"file://{path}"):
            fast = read_info(url)
            assert fast is not None, name
            slow = open_store(url).info()
            assert json.dumps(fast) == json.dumps(slow), name  # the same data, in the same order
            code, out, err = run_cli(capsys, "info", url)
            assert (code, err) == (0, "") and out.splitlines() == info_lines(slow)
    data = read_info(str(tmp_path / "planned.zarr"))
    assert data is not None and data["runs"]["m/x"]["incomplete"].startswith("incomplete: 0 of 2")
    data = read_info(str(tmp_path / "unreadable.zarr"))
    assert data is not None and data["runs"] == {} and len(data["unreadable"]) == 1
    data = read_info(str(tmp_path / "full.zarr"))
    assert data is not None
    assert data["runs"]["m/base"]["results"]["compare"] == ["vs-m_other/types"]


def test_info_asks_the_store_for_what_it_does_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.cli._info import read_info
    from langneurons.store import create_store

    from .conftest import make_counts, run_cli, v1_store

    path = tmp_path / "s.zarr"
    create_store(path).create_run("m/b", n_layers=3, n_neurons=7, counts=make_counts(["en", "de"]))
    code, _, err = run_cli(capsys, "export", path, tmp_path / "s.zip")
    assert code == 0, err
    old = v1_store(tmp_path)
    for url in (tmp_path / "s.zip", old, tmp_path / "nope", tmp_path / "s.zip" / "x"):
        assert read_info(str(url)) is None
    code, out, _ = run_cli(capsys, "info", tmp_path / "s.zip")
    assert code == 0 and "run m/b" in out
    code, _, err = run_cli(capsys, "info", old)
    assert code == 1 and "langneurons migrate" in err  # the store's own message
    chunk = path / "m" / "b" / "n_tokens" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\0")  # a damaged chunk
    assert read_info(str(path)) is None
    code, _, err = run_cli(capsys, "info", path)
    assert code == 1 and "n_tokens" in err and "checksum" in err
    chunk.unlink()
    assert read_info(str(path)) is None
    code, _, err = run_cli(capsys, "info", path)
    assert code == 1 and "is missing" in err


def test_info_reads_token_totals_from_the_attribute_without_numpy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zarr

    from langneurons.cli._info import read_info
    from langneurons.store import create_store, open_store

    from .conftest import make_counts, run_cli

    path = tmp_path / "s.zarr"
    store = create_store(path)
    store.create_run("m/b", n_layers=3, n_neurons=7, languages=["en", "de", "fr"])
    store.merge_counts("m/b", make_counts(["de"], layers=3, neurons=7, seed=1))
    store.merge_counts("m/b", make_counts(["de", "zh"], layers=3, neurons=7, seed=2))
    ds = open_store(path).open_run("m/b")
    # every commit rewrote the attribute: it holds what the arrays hold
    totals = json.loads(ds.attrs["token_totals"])
    assert totals["language"] == [str(x) for x in ds.language.values] == ["en", "de", "fr", "zh"]
    assert totals["n_tokens"] == ds.n_tokens.values.tolist()
    assert open_store(path).validate() == []
    fast = read_info(str(path))
    assert fast is not None and json.dumps(fast) == json.dumps(open_store(path).info())
    code = f"from langneurons.cli import main\nassert main(['info', {str(path)!r}]) == 0"
    heavy = _loaded(code) & {"numpy", "numcodecs", *HEAVY}
    assert not heavy, f"langneurons info imports {sorted(heavy)}"
    # a run written before the attribute existed: its arrays are decoded, to the same answer
    group = zarr.open_group(path / "m" / "b", mode="r+")
    del group.attrs["token_totals"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    older = read_info(str(path))
    assert older is not None and json.dumps(older) == json.dumps(open_store(path).info())
    assert older["runs"]["m/b"]["n_tokens"] == fast["runs"]["m/b"]["n_tokens"]
    assert open_store(path).validate() == []
    # an attribute that disagrees with the arrays is named by validate
    group.attrs["token_totals"] = json.dumps({"language": ["en"], "n_tokens": [[1, 2]]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    problems = open_store(path).validate()
    assert len(problems) == 1 and "token_totals attribute does not match" in problems[0]
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 1 and "token_totals" in out + err


def test_info_reader_names_agree_with_the_schema() -> None:
    from langneurons.cli import _info
    from langneurons.names import MOE_ATTR
    from langneurons.store import _attrs, _plan, schema

    assert _info.SCHEMA_VERSION == schema.SCHEMA_VERSION
    assert _info.STORE_ATTR == schema.STORE_ATTR
    assert _info.ROLES == tuple(schema.ROLES)
    assert _info.MOMENTS == tuple(schema.MOMENTS)
    assert _info.SEQUENCES == tuple(schema.SEQUENCES)
    assert _info.RESULT_GROUPS == tuple(schema.RESULT_GROUPS)
    assert _info.RESERVED_NAMES == schema.RESERVED_NAMES
    assert _info.JOURNAL == schema.JOURNAL and _info.RESULTS_OF == schema.RESULTS_OF
    assert _info.JSON_ATTRS == _attrs.JSON_ATTRS and _info.PLANNED_UNITS == _plan.PLANNED_UNITS
    assert _info.TOKEN_TOTALS == schema.TOKEN_TOTALS_ATTR
    assert _info.READS == schema.READS and _info.MOE_SEQUENCES == schema.MOE_SEQUENCES
    assert _info.MOE_ATTR == MOE_ATTR


def test_info_loads_neither_xarray_nor_zarr(tmp_path: Path) -> None:
    from langneurons.store import create_store

    from .conftest import make_counts

    path = tmp_path / "s.zarr"
    create_store(path).create_run("m/b", n_layers=3, n_neurons=7, counts=make_counts(["en", "de"]))
    code = f"from langneurons.cli import main\nassert main(['info', {str(path)!r}]) == 0"
    heavy = _loaded(code) & set(HEAVY)
    assert not heavy, f"langneurons info imports {sorted(heavy)}"


def test_identify_options_default_to_identify_params() -> None:
    import click

    from langneurons.analysis.params import IdentifyParams
    from langneurons.cli._options import IDENTIFY_FIELDS, identify_options, identify_params

    command = click.command()(identify_options(lambda **kw: None))
    defaults = {p.name: p.default for p in command.params}
    assert set(defaults) == {name for name, _, _ in IDENTIFY_FIELDS}
    assert {f for _, f, _ in IDENTIFY_FIELDS} == set(IdentifyParams.fields())
    assert identify_params(dict(defaults)) == IdentifyParams()
