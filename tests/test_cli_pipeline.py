"""The whole pipeline through the command line: extract, identify, ablate, stats, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.cli import main  # noqa: E402
from langneurons.extract.corpus import builtin_corpus, write_records  # noqa: E402
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import open_store  # noqa: E402

from .conftest import run_cli  # noqa: E402

pytestmark = pytest.mark.requires_torch

LANGS = ["en", "zh", "de", "sw"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data.jsonl"
    write_records(data, [r for r in builtin_corpus(LANGS) if int(r.id[1:]) <= 8])
    # deactivation is scored on held-out problems (the evaluation part), four per language
    held_out = root / "eval.jsonl"
    write_records(held_out, [r for r in builtin_corpus(LANGS, part="evaluate") if r.id <= "q28"])
    base = tiny_model("llama", seed=0, path=root / "base", layers=4, hidden=32, intermediate=64)
    aligned = tiny_model(
        "llama", seed=1, path=root / "aligned", layers=4, hidden=32, intermediate=64
    )
    store = root / "s.zarr"
    for name, model in (("base", base), ("aligned", aligned)):
        code = main(
            [
                "extract",
                "--model",
                str(model),
                "--data",
                str(data),
                "--store",
                str(store),
                "--run",
                f"tiny/{name}",
                "--per-sequence",
                "--chat-template",
                "--device",
                "cpu",
                "--unit-size",
                "8",
            ]
        )
        assert code == 0
    return {
        "root": root,
        "data": data,
        "eval": held_out,
        "base": base,
        "aligned": aligned,
        "store": store,
    }


def test_extract_then_identify(
    pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = pipeline["store"]
    info = open_store(store).info()["runs"]["tiny/base"]
    assert info["languages"] == LANGS and info["sequences"] == 4 * 8
    assert info["attrs"]["provenance"]["method"] == "extracted"
    assert info["attrs"]["hook_point"] == "model.layers.{i}.mlp.act_fn"
    assert info["attrs"]["activation"] == "silu"
    code, out, err = run_cli(
        capsys, "identify", store, "--run", "tiny/base", "--top-rate", "0.1", "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["selected"] == round(4 * 64 * 0.1)


def test_ablate_and_deactivation_stats(
    pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = pipeline["store"]
    assert (
        run_cli(
            capsys,
            "identify",
            store,
            "--run",
            "tiny/base",
            "--method",
            "lape",
            "--top-rate",
            "0.1",
            "--name",
            "for-ablation",
        )[0]
        == 0
    )
    code, out, err = run_cli(
        capsys,
        "ablate",
        "--model",
        pipeline["base"],
        "--store",
        store,
        "--run",
        "tiny/base",
        "--identification",
        "for-ablation",
        "--data",
        pipeline["eval"],
        "--device",
        "cpu",
        "--chat-template",
    )
    assert code == 0, err
    assert "ablation saved at tiny/base/ablation/for-ablation" in out
    assert "held-out evaluation: disjoint (no evaluation item is among the 32 sequences" in out
    ablation = open_store(store).open_result("tiny/base", "ablation", "for-ablation")
    assert list(ablation.deactivated.values)[0] == "none"
    assert list(ablation.evaluated.values) == LANGS
    assert ablation.sizes["control"] == 19  # the default: the control test can reach 0.05
    assert ablation.sizes["item"] == 4 * 4
    assert np.isfinite(ablation.nll.values).all() and (ablation.nll.values > 0).all()
    assert np.isnan(ablation.control_nll.sel(deactivated="none").values).all()
    # switching off no neurons changes nothing: the "none" row is the unhooked model
    code, out, err = run_cli(
        capsys,
        "stats",
        "deactivation",
        store,
        "--run",
        "tiny/base",
        "--ablation",
        "for-ablation",
        "--n-perm",
        "500",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)["deactivation"]
    assert result["saved"] == "tiny/base/stats/deactivation"
    assert "pvalue_permutation" in result["variables"]
    assert result["variables"]["min_pvalue_control"]["values"] == [0.05] * 4
    assert all(v is not None for v in result["variables"]["dominance_low"]["values"])


def test_stats_stages_and_compare(
    pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = pipeline["store"]
    code, out, err = run_cli(
        capsys,
        "stats",
        "stages",
        store,
        "--run",
        "tiny/base",
        "--n-boot",
        "5",
        "--top-rate",
        "0.1",
        "--json",
    )
    assert code == 0, err
    stages = json.loads(out)["stages"]
    assert len(stages["variables"]["stage_label"]["values"]) == 4
    code, out, err = run_cli(
        capsys,
        "compare",
        "runs",
        store,
        "--base",
        "tiny/base",
        "--aligned",
        "tiny/aligned",
        "--top-rate",
        "0.1",
        "--n-boot",
        "5",
        "--trained-languages",
        "en,zh",
        "--n-perm",
        "100",
    )
    assert code == 0, err
    for part in ("types", "overlap", "transitions", "mcnemar", "type_change", "spontaneous"):
        assert f"{part}: saved at tiny/aligned/compare/vs-tiny_base/{part}" in out
    code, out, err = run_cli(
        capsys,
        "compare",
        "checkpoints",
        store,
        "--runs",
        "tiny/base,tiny/aligned",
        "--top-rate",
        "0.1",
        "--json",
    )
    assert code == 0, err
    traj = json.loads(out)["trajectories"]
    assert traj["variables"]["n_selected"]["values"] == [26, 26]


def test_resume_refused_for_other_model(
    pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys,
        "extract",
        "--model",
        pipeline["aligned"],
        "--data",
        pipeline["data"],
        "--store",
        pipeline["store"],
        "--run",
        "tiny/base",
        "--per-sequence",
        "--chat-template",
        "--device",
        "cpu",
        "--unit-size",
        "8",
        "--resume",
    )
    assert code == 1
    assert "was extracted with a different model (config_sha256" in err
    assert err.count("\n") == 1


def test_report_command(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    store, out = pipeline["store"], pipeline["root"] / "report"
    assert run_cli(capsys, "identify", store, "--run", "tiny/aligned", "--top-rate", "0.1")[0] == 0
    code, printed, err = run_cli(capsys, "report", store, "--out", out, "--runs", "tiny/aligned")
    assert code == 0, err
    assert printed.strip() == f"wrote {out / 'report.html'}"
    html = (out / "report.html").read_text()
    assert "tiny/aligned" in html and "data:image/png;base64," in html
    code, _, err = run_cli(capsys, "report", store, "--out", out, "--runs", "tiny/nope")
    assert code == 1 and "run 'tiny/nope' is not in store" in err
    assert (out / "report.html").exists()  # the earlier report is still there
