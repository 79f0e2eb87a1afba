"""Answers where the user looks: the automatic lambda at its bound, headline tables, and results of
read-only stores saved elsewhere (``--results-store``) or not at all (``--no-save``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import identify
from langneurons.errors import LambdaAtBoundWarning, ParameterError
from langneurons.store import create_store, open_store

from .conftest import make_counts, run_cli

LANGS = ["en", "de", "fr", "zh"]
RUN = "m/base"


def _bounded_run() -> xr.Dataset:
    """Counts whose automatic lambda lies above 0.2: a general neuron wins at large lambda."""
    rng = np.random.default_rng(7)
    k, layers, neurons, tokens = 3, 2, 20, 1000
    p = rng.uniform(0.05, 0.45, size=(k, layers, neurons))
    p[:, 0, 0] = 0.99  # general, the largest max P
    for j in range(k):
        p[:, 1, j] = 0.02
        p[j, 1, j] = 0.9  # specific to language j
    active = np.zeros((k, 2, layers, neurons), dtype=np.int64)
    active[:, 1] = np.round(p * tokens).astype(np.int64)
    n_tokens = np.array([[0, tokens]] * k, dtype=np.int64)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), active),
            "n_tokens": (("language", "role"), n_tokens),
        },
        coords={
            "language": ["a", "b", "c"],
            "role": ["prompt", "response"],
            "layer": np.arange(layers),
            "neuron": np.arange(neurons),
        },
    )


def test_lambda_at_the_top_of_its_range_is_flagged_and_widening_finds_it() -> None:
    run = _bounded_run()
    with pytest.warns(
        LambdaAtBoundWarning, match=r"ended at the top of its search range \[0, 0.2\]"
    ):
        plain = identify(run, top_rate=0.1)
    assert plain.attrs["lambda_at_bound"] is True
    assert plain.attrs["lam_range_searched"] == [0.0, 0.2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LambdaAtBoundWarning)  # no warning once it is inside
        wide = identify(run, top_rate=0.1, lam_widen=10)
    assert wide.attrs["lambda_at_bound"] is False
    assert wide.attrs["lambda_widened"] >= 1
    lo, hi = wide.attrs["lam_range_searched"]
    assert hi == 0.2 * 2 ** wide.attrs["lambda_widened"]
    assert wide.attrs["lambda"] > 0.2
    # the widened search is the spec's bisection on the range it ended with
    same = identify(run, top_rate=0.1, lam_range=(lo, hi))
    assert same.attrs["lambda"] == wide.attrs["lambda"]
    np.testing.assert_array_equal(same["selected"].values, wide["selected"].values)
    # the default (lam_widen=0) leaves the spec's search untouched
    assert plain.attrs["lambda_widened"] == 0 and plain.attrs["lambda"] < 0.2


def test_a_lambda_the_condition_never_bounds_says_so() -> None:
    run = _bounded_run().isel(neuron=slice(1, None))  # without the general neuron
    with pytest.warns(LambdaAtBoundWarning, match="does not determine lambda on these counts"):
        result = identify(run, top_rate=0.1, lam_widen=3)
    assert result.attrs["lambda_widened"] == 3 and result.attrs["lambda_at_bound"] is True


@pytest.mark.parametrize("bad", [-1, 11, 1.5, True, "2"])
def test_lam_widen_is_checked(bad: object) -> None:
    with pytest.raises(ParameterError, match=r"lam_widen must be an integer from 0 to 10"):
        identify(_bounded_run(), lam_widen=bad)  # type: ignore[arg-type]


@pytest.fixture
def shared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """A per-sequence store and its exported zip (read-only)."""
    path = tmp_path / "s.zarr"
    counts = make_counts(LANGS, layers=4, neurons=30, seed=2, sequences=6)
    create_store(path).create_run(RUN, n_layers=4, n_neurons=30, sequences=True, counts=counts)
    zipped = tmp_path / "share" / "s.zip"
    zipped.parent.mkdir()
    code, _, err = run_cli(capsys, "export", path, zipped)
    assert code == 0, err
    return {"store": path, "zip": zipped, "tmp": tmp_path}


def test_identify_prints_the_bound_warning_once_and_the_unassigned_count(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "identify", shared["store"], "--run", RUN, "--top-rate", "0.1")
    assert code == 0, err
    assert err.count("langneurons: warning: the automatic lambda") == 1 and err.count("\n") == 1
    assert "(at the top of its search range)" in out
    assert "of them assigned to no language" in out
    code, out, err = run_cli(capsys, "stats", "stability", shared["store"], "--run", RUN,
                             "--n-boot", "4", "--top-rate", "0.1")  # fmt: skip
    assert code == 0, err
    assert err.count("langneurons: warning:") == 1  # not once per replicate
    assert "Jaccard of mask: mean [CI]" in out
    for lang in LANGS:
        assert any(line.split()[:1] == [lang] for line in out.splitlines())


def test_a_zip_is_refused_without_a_place_for_results(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in shared["zip"].parent.iterdir())
    code, out, err = run_cli(capsys, "identify", shared["zip"], "--run", RUN)
    assert code == 1 and out == ""
    assert err == (
        f"langneurons: error: store '{shared['zip']}' is read-only (a zip file); save the results "
        "in a writable store with --results-store PATH, or print them without saving with "
        "--no-save\n"
    )
    code, _, err = run_cli(capsys, "stats", "tests", shared["zip"], "--run", RUN)
    assert code == 1 and "is read-only (a zip file)" in err
    code, _, err = run_cli(capsys, "identify", shared["zip"], "--run", RUN, "--no-save",
                           "--results-store", shared["tmp"] / "r.zarr")  # fmt: skip
    assert code == 1
    assert (
        err == "langneurons: error: --results-store and --no-save exclude each other; choose one\n"
    )
    assert sorted(p.name for p in shared["zip"].parent.iterdir()) == before
    assert not (shared["tmp"] / "r.zarr").exists()


def test_a_zip_is_analysed_into_a_results_store(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    results = shared["tmp"] / "results.zarr"
    args = ["--run", RUN, "--results-store", results]
    code, out, err = run_cli(capsys, "identify", shared["zip"], *args, "--top-rate", "0.1")
    assert code == 0, err
    assert out.startswith(f"saved at {RUN}/identification/ternary in {results}\n")
    code, out, err = run_cli(capsys, "stats", "stages", shared["zip"], *args, "--n-boot", "3",
                             "--top-rate", "0.1")  # fmt: skip
    assert code == 0, err
    assert "4 stages over 4 layers" in out and "multilingual understanding" in out
    code, out, err = run_cli(capsys, "stats", "tests", shared["zip"], *args)
    assert code == 0, err
    assert "neuron x language tests significant" in out
    code, out, err = run_cli(capsys, "stats", "tests", shared["zip"], *args, "--name", "t2",
                             "--identification", "ternary")  # fmt: skip
    assert code == 0, err  # the identification is read back from the results store
    store = open_store(results)
    assert store.runs() == []
    assert store.results(RUN, "identification") == ["ternary"]
    assert set(store.results(RUN, "stats")) == {"stages", "tests", "t2", "t2-vs-ternary"}
    linked = store.linked_runs()[RUN]
    assert linked["store"] == str(shared["zip"]) and linked["corpus_hash"] == ""
    assert store.validate() == []
    direct = identify(open_store(shared["store"]).open_run(RUN), top_rate=0.1)
    saved = store.open_result(RUN, "identification", "ternary")
    np.testing.assert_array_equal(saved["mask"].values, direct["mask"].values)
    code, out, _ = run_cli(capsys, "info", results)
    assert f"results of run {RUN} (counts in {shared['zip']})" in out
    assert json.loads(run_cli(capsys, "info", results, "--json")[1])["results_only"][RUN]


def test_a_results_store_refuses_results_of_another_run_of_that_name(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    results = shared["tmp"] / "results.zarr"
    code, _, err = run_cli(capsys, "identify", shared["zip"], "--run", RUN, "--results-store",
                           results, "--lambda", "0.01")  # fmt: skip
    assert code == 0, err
    other = shared["tmp"] / "other.zarr"
    counts = make_counts(LANGS, layers=4, neurons=30, seed=9)
    create_store(other).create_run(RUN, n_layers=4, n_neurons=30, counts=counts)
    code, _, err = run_cli(capsys, "identify", other, "--run", RUN, "--results-store", results,
                           "--lambda", "0.01")  # fmt: skip
    assert code == 1
    assert (
        f"holds results of another run '{RUN}'" in err and "choose another --results-store" in err
    )
    code, _, err = run_cli(capsys, "identify", shared["zip"], "--run", RUN, "--results-store",
                           other, "--lambda", "0.01")  # fmt: skip
    assert code == 1 and "has a run 'm/base' with counts of its own" in err


def test_no_save_prints_and_writes_nothing(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.stat().st_mtime_ns for p in shared["store"].rglob("*")}
    code, out, err = run_cli(capsys, "identify", shared["store"], "--run", RUN, "--no-save",
                             "--lambda", "0.01", "--top-rate", "0.1")  # fmt: skip
    assert code == 0, err
    assert out.startswith("not saved (--no-save)\n  ternary: 12 neurons selected")
    assert {p: p.stat().st_mtime_ns for p in shared["store"].rglob("*")} == before


def test_exported_zip_and_unpacked_store_follow_the_umask(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = shared["tmp"] / "public.zip"
        code, _, err = run_cli(capsys, "export", shared["store"], out)
        assert code == 0, err
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        code, _, err = run_cli(capsys, "import", "zip", out, "--store", shared["tmp"] / "u.zarr")
        assert code == 0, err
        assert stat.S_IMODE((shared["tmp"] / "u.zarr").stat().st_mode) == 0o755
        os.umask(0o077)
        private = shared["tmp"] / "private.zip"
        assert run_cli(capsys, "export", shared["store"], private)[0] == 0
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_progress_lines_when_not_a_terminal(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long commands print plain progress lines to stderr off a terminal; --quiet silences them."""
    from langneurons import _progress

    code, out, err = run_cli(capsys, "export", shared["store"], shared["tmp"] / "q.zip")
    assert code == 0 and err == ""  # quick work: no line before the first interval (5 s)
    monkeypatch.setenv("LANGNEURONS_PROGRESS_INTERVAL", "0")

    code, out, err = run_cli(capsys, "export", shared["store"], shared["tmp"] / "a.zip")
    assert code == 0
    assert out == f"wrote {shared['tmp'] / 'a.zip'}\n"
    last = err.strip().splitlines()[-1]
    assert last.startswith("[export] ") and "file (100%)" in last and "file/s" in last
    code, out, err = run_cli(capsys, "--quiet", "export", shared["store"], shared["tmp"] / "b.zip")
    assert code == 0 and err == ""
    _progress.configure("log")


def test_progress_task_lines() -> None:
    import io

    from langneurons import _progress

    stream = io.StringIO()
    _progress.configure("lines", interval=0.0, stream=stream)
    try:
        with _progress.progress("extract", total=4, unit="unit") as task:
            for _ in range(4):
                task.note("en/0001")
                task.update()
    finally:
        _progress.configure("log")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # one per step, the last not repeated at close
    assert lines[0].startswith("[extract] 1/4 unit (25%), ") and "ETA" in lines[0]
    assert lines[-1].startswith("[extract] 4/4 unit (100%), ") and "ETA" not in lines[-1]
    assert lines[-1].endswith("en/0001")
    stream = io.StringIO()
    _progress.configure("auto", stream=stream)  # a StringIO is no terminal: lines
    assert _progress.current_mode() == "lines"
    _progress.configure("quiet")
    with _progress.progress("x", total=2) as task:
        task.update(2)
    stream = io.StringIO()
    _progress.configure("lines", interval=60.0, stream=stream)
    with _progress.progress("quick", total=3) as task:
        task.update(3)
    assert stream.getvalue() == ""  # done before the first interval: nothing to report
    _progress.configure("log")
    with pytest.raises(ValueError, match="progress mode 'loud' is not one of"):
        _progress.configure("loud")  # type: ignore[arg-type]


def test_bootstraps_report_progress_per_replicate(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGNEURONS_PROGRESS_INTERVAL", "0")
    code, _, err = run_cli(capsys, "stats", "stability", shared["store"], "--run", RUN,
                           "--n-boot", "3", "--top-rate", "0.1", "--no-save")  # fmt: skip
    assert code == 0
    assert "[bootstrap identification] 3/3 replicate (100%)" in err
    code, _, err = run_cli(capsys, "stats", "stages", shared["store"], "--run", RUN,
                           "--n-boot", "3", "--top-rate", "0.1", "--no-save")  # fmt: skip
    assert code == 0
    assert "[bootstrap run] 3/3 replicate (100%)" in err
    from langneurons import _progress

    _progress.configure("log")


# --------------------------------------------------------------------------- workflows
def test_compare_runs_is_one_workflow_with_one_name(
    shared: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons import workflows
    from langneurons.analysis.params import IdentifyParams

    path = shared["store"]
    store = open_store(path, mode="r+")
    counts = make_counts(LANGS, layers=4, neurons=30, seed=3, sequences=6)
    store.create_run("m/aligned", n_layers=4, n_neurons=30, sequences=True, counts=counts)
    code, out, err = run_cli(
        capsys, "compare", "runs", path, "--base", RUN, "--aligned", "m/aligned",
        "--top-rate", "0.1", "--n-boot", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    printed = json.loads(out)
    assert list(printed) == ["types", "overlap", "transitions", "mcnemar", "type_change",
                             "mask_change", "type_switches", "shared_by_change"]  # fmt: skip
    assert printed["types"]["saved"] == "m/aligned/compare/vs-m_base/types"
    # the library workflow gives what the command saved
    parts = workflows.compare_runs(
        store.open_run(RUN), store.open_run("m/aligned"), IdentifyParams(top_rate=0.1), n_boot=3
    )
    saved = workflows.open_comparison(store, "m/aligned", RUN)
    assert set(saved) == set(parts)
    for part, ds in parts.items():
        xr.testing.assert_equal(saved[part].load(), ds)  # the store adds result_* attrs
    # a comparison the 0.1 demo saved as vs-base/PART is still found
    store.save_result("m/aligned", "compare", "vs-base/types", parts["types"])
    assert workflows.find_comparison(store, "m/aligned", "tiny/base") == "vs-base"
    assert workflows.find_comparison(store, "m/aligned", RUN) == "vs-m_base"
    assert workflows.find_comparison(store, "m/aligned", "m/other") is None
    assert workflows.comparison_name("a/b/c") == "vs-a_b_c"
