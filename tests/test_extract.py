"""Extraction: exact per-role counts against an independent oracle, resume and shards bit-exact."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import zarr.storage  # noqa: E402

from langneurons.errors import (  # noqa: E402
    InputFormatError,
    ParameterError,
    RunExistsError,
    StoreValidationError,
)
from langneurons.extract.engine import (  # noqa: E402
    bucket_batches,
    encode,
    extract,
    load_model,
    parse_shard,
    plan_units,
)
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import decode_attrs, open_store  # noqa: E402

from .conftest import TEXTS, run_cli, write_data  # noqa: E402

pytestmark = pytest.mark.requires_torch


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model("llama", seed=1, path=tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.jsonl")


# ----------------------------------------------------------------------------- the oracle
def _oracle(model_dir: Path, data: Path, *, chat_template: bool) -> dict[str, np.ndarray]:
    """Expected counts computed one sequence at a time, no padding, no activation hooks.

    The MLP input of every layer is taken from a pre-hook on the layer's MLP (or first MLP
    projection); the gate/fc1 projection and the activation are then applied by hand, and
    positives are split into roles by the known prompt length.
    """
    from transformers.activations import ACT2FN

    from langneurons.extract.corpus import read_records

    loaded = load_model(model_dir, device="cpu", dtype="float32")
    model, tok, cfg = loaded.model, loaded.tokenizer, loaded.model.config
    records = read_records(data)
    langs = list(dict.fromkeys(r.language for r in records))
    n_layers, n_neurons = loaded.n_layers, loaded.plan.neurons
    active = np.zeros((len(langs), 2, n_layers, n_neurons), dtype=np.int64)
    tokens = np.zeros((len(langs), 2), dtype=np.int64)
    mtype = cfg.model_type
    if mtype == "gpt2":
        layers = model.transformer.h
        entry = [layer.mlp for layer in layers]

        def project(i: int, x: torch.Tensor) -> torch.Tensor:
            return ACT2FN[cfg.activation_function](layers[i].mlp.c_fc(x))
    elif mtype == "opt":
        layers = model.model.decoder.layers
        entry = [layer.fc1 for layer in layers]

        def project(i: int, x: torch.Tensor) -> torch.Tensor:
            return ACT2FN[cfg.activation_function](layers[i].fc1(x))
    else:  # llama-style gated MLPs
        layers = model.model.layers
        entry = [layer.mlp for layer in layers]

        def project(i: int, x: torch.Tensor) -> torch.Tensor:
            return ACT2FN[cfg.hidden_act](layers[i].mlp.gate_proj(x))

    inputs: dict[int, torch.Tensor] = {}
    handles = [
        m.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0]))
        for i, m in enumerate(entry)
    ]
    try:
        with torch.no_grad():
            for record in records:
                enc = encode(record, tok, chat_template=chat_template, max_length=1024)
                ids = torch.tensor([enc.prompt + enc.response])
                model(input_ids=ids)
                k, p = langs.index(record.language), len(enc.prompt)
                tokens[k] += (p, len(enc.response))
                for i in range(n_layers):
                    act = project(i, inputs[i].reshape(-1, inputs[i].shape[-1]))
                    positive = (act > 0).numpy()
                    active[k, 0, i] += positive[:p].sum(0)
                    active[k, 1, i] += positive[p:].sum(0)
    finally:
        for handle in handles:
            handle.remove()
    return {"n_active": active, "n_tokens": tokens}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "qwen3"])
def test_counts_equal_the_oracle(tmp_path: Path, data: Path, arch: str) -> None:
    model_dir = tiny_model(arch, seed=3, path=tmp_path / arch)
    store = tmp_path / "s.zarr"
    report = extract(
        model_dir,
        data,
        store,
        "m/base",
        batch_tokens=64,
        unit_size=3,
        per_sequence=True,
        device="cpu",
        dtype="float32",
        chat_template=True,
        progress=False,
    )
    assert report["units_done"] == 6
    ds = open_store(store).open_run("m/base").load()
    expected = _oracle(model_dir, data, chat_template=True)
    np.testing.assert_array_equal(ds.n_tokens.values, expected["n_tokens"])
    np.testing.assert_array_equal(ds.n_active.values, expected["n_active"])
    # per-sequence counts add up to the per-language counts
    for k, lang in enumerate(ds.language.values):
        rows = ds.seq_language.values == lang
        np.testing.assert_array_equal(
            ds.seq_n_active.values[rows].astype(np.int64).sum(0), expected["n_active"][k]
        )
    # both roles were really counted, and the activation is not trivially all-positive
    assert (ds.n_active.sum(("layer", "neuron")) > 0).all()
    assert (ds.n_active < ds.n_tokens).any()
    assert open_store(store).validate() == []


def test_moments_match_a_float64_recount(tmp_path: Path, llama: Path, data: Path) -> None:
    store = tmp_path / "s.zarr"
    extract(llama, data, store, "r", device="cpu", dtype="float32", sums=True, progress=False)
    ds = open_store(store).open_run("r").load()
    assert ds.act_sum.dtype == np.float64
    assert (ds.act_sqsum >= 0).all()
    grid = 2.0**-20
    assert np.array_equal(np.round(ds.act_sum.values / grid) * grid, ds.act_sum.values)
    # a mean activation of a positive-count neuron is finite and bounded by the sqrt of sqsum
    mean = ds.act_sum / ds.n_tokens
    assert np.isfinite(mean.values).all()


def test_sums_are_optional_and_off_by_default(tmp_path: Path, llama: Path, data: Path) -> None:
    store = tmp_path / "s.zarr"
    kwargs: dict[str, Any] = {"device": "cpu", "dtype": "float32", "progress": False}
    extract(llama, data, store, "plain", **kwargs)
    extract(llama, data, store, "summed", sums=True, **kwargs)
    plain = open_store(store).open_run("plain").load()
    summed = open_store(store).open_run("summed").load()
    assert "act_sum" not in plain and "act_sqsum" not in plain
    assert "act_sum" in summed and "act_sqsum" in summed
    # the counts do not depend on whether the sums were kept
    np.testing.assert_array_equal(plain.n_active.values, summed.n_active.values)
    np.testing.assert_array_equal(plain.n_tokens.values, summed.n_tokens.values)
    assert open_store(store).validate() == []
    # completing a run with the other choice is refused, naming the flag that fits
    extract(llama, data, store, "part", languages=["en"], **kwargs)
    with pytest.raises(StoreValidationError, match="without act_sum/act_sqsum; pass --no-sums"):
        extract(llama, data, store, "part", sums=True, resume=True, **kwargs)
    extract(llama, data, store, "part-summed", languages=["en"], sums=True, **kwargs)
    with pytest.raises(StoreValidationError, match="with act_sum/act_sqsum; pass --sums"):
        extract(llama, data, store, "part-summed", resume=True, **kwargs)
    extract(llama, data, store, "part-summed", sums=True, resume=True, **kwargs)
    done = open_store(store).open_run("part-summed").load()
    np.testing.assert_array_equal(done.act_sum.values, summed.act_sum.values)


def test_runs_from_before_optional_sums_resume_with_sums(
    tmp_path: Path, llama: Path, data: Path
) -> None:
    """A run whose identity has no "sums" key was made when the sums were always stored."""
    import zarr

    store = tmp_path / "s.zarr"
    kwargs: dict[str, Any] = {"device": "cpu", "dtype": "float32", "progress": False}
    extract(llama, data, store, "old", languages=["en"], sums=True, **kwargs)
    group = zarr.open_group(store / "old", mode="r+")
    provenance = json.loads(group.attrs["provenance"])
    del provenance["identity"]["sums"]
    group.attrs["provenance"] = json.dumps(provenance)
    zarr.consolidate_metadata(str(store))
    with pytest.raises(StoreValidationError, match="pass --sums"):
        extract(llama, data, store, "old", resume=True, **kwargs)
    extract(llama, data, store, "old", sums=True, resume=True, **kwargs)
    assert open_store(store).validate() == []


# ----------------------------------------------------------------------------- units, batches
def test_bucket_batches_respects_the_budget() -> None:
    lengths = [5, 17, 3, 17, 9, 40, 2]
    batches = bucket_batches(lengths, 36)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert width * len(batch) <= 36 or len(batch) == 1
    assert batches[0] == [5]  # longer than the budget: alone


def test_plan_units_and_shards(data: Path) -> None:
    from langneurons.extract.corpus import read_records

    records = read_records(data)
    units = plan_units(records, ["en", "de", "zh"], 3)
    assert [u.key for u in units] == ["en/0", "en/1", "de/0", "de/1", "zh/0", "zh/1"]
    halves = plan_units(records, ["en", "de", "zh"], 3, (0, 2)) + plan_units(
        records, ["en", "de", "zh"], 3, (1, 2)
    )
    assert sorted(u.key for u in halves) == sorted(u.key for u in units)
    with pytest.raises(
        ParameterError, match=r"--shard 2/2 is out of range; use I/N with 0 <= I < N"
    ):
        parse_shard("2/2")
    with pytest.raises(ParameterError, match=r"--shard 'x' is not I/N"):
        parse_shard("x")


def test_one_pass_matches_prompt_alone(tmp_path: Path, llama: Path, data: Path) -> None:
    """The prompt role of one pass equals a pass over the prompts alone (causal attention)."""
    from langneurons.extract.corpus import read_records, write_records

    prompts = tmp_path / "prompts.jsonl"
    records = read_records(data)
    import dataclasses

    write_records(prompts, [dataclasses.replace(r, response="x") for r in records])
    extract(llama, data, tmp_path / "a.zarr", "r", device="cpu", dtype="float32", progress=False)
    extract(llama, prompts, tmp_path / "b.zarr", "r", device="cpu", dtype="float32", progress=False)
    a = open_store(tmp_path / "a.zarr").open_run("r").load()
    b = open_store(tmp_path / "b.zarr").open_run("r").load()
    np.testing.assert_array_equal(
        a.n_active.sel(role="prompt").values, b.n_active.sel(role="prompt").values
    )


# ----------------------------------------------------------------------------- processes
def _cli_command(model: Path, data: Path, store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "langneurons",
        "extract",
        "--model",
        str(model),
        "--data",
        str(data),
        "--store",
        str(store),
        "--run",
        "m/base",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--per-sequence",
        "--sums",  # the kill chains below die between the moment arrays' writes too
        "--unit-size",
        "1",
        "--batch-tokens",
        "64",
        *extra,
    ]


def _arrays(store: Path) -> dict[str, np.ndarray]:
    ds = open_store(store).open_run("m/base").load()
    return {name: ds[name].values for name in ds.variables}


def _assert_same_store(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].tobytes() == right[name].tobytes(), name
    meta_a, meta_b = open_store(a).run_metadata("m/base"), open_store(b).run_metadata("m/base")
    assert meta_a.corpus_hash == meta_b.corpus_hash and meta_a.hook_point == meta_b.hook_point
    assert open_store(a).committed_units("m/base") == open_store(b).committed_units("m/base")
    for path in (a, b):
        # what a reader sees lists every committed unit once: none lost, none written twice
        writes = decode_attrs(open_store(path).open_run("m/base").attrs)["writes"]
        units = [u for w in writes for u in w.get("units", [])]
        assert len(units) == len(set(units)), units
        assert set(units) == open_store(path).committed_units("m/base")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, llama: Path, data: Path) -> Path:
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    proc = subprocess.run(_cli_command(llama, data, store), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return store


def test_kill_and_resume_is_bit_exact(
    tmp_path: Path, llama: Path, data: Path, reference: Path
) -> None:
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_cli_command(llama, data, store), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(open_store(store).committed_units("m/base")) >= 3:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        except Exception:  # noqa: BLE001 - the store may not exist yet
            pass
        time.sleep(0.01)
    proc.wait()
    assert killed, "the extraction finished before it could be killed"
    done = open_store(store).committed_units("m/base")
    assert 3 <= len(done) < 12
    # without --resume the run is refused, and nothing changes
    again = subprocess.run(_cli_command(llama, data, store), capture_output=True, text=True)
    assert again.returncode == 1
    assert "pass --resume to complete it" in again.stderr
    resumed = subprocess.run(
        _cli_command(llama, data, store, "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_store(store, reference)


# A CLI extraction whose store operations are watched: in `phase` ("create": inside create_run,
# or a unit key: inside that unit's commit), once operations matching every regex in `after` are
# done, it records where it is in `where` and SIGKILLs itself just before the first operation
# `op` ("set", "delete" or "delete_dir") on a key matching `key`.
_KILL_AT = """
import json, os, re, signal, sys
from pathlib import Path
from typing import Any

import zarr.storage

from langneurons.cli import main
from langneurons.store import ActivationStore, RunWriter

where, phase, op, key, after = json.loads(sys.argv[1])
state = {"phase": None, "done": []}


def enter(method, phase_of):
    def wrapped(self, *args, **kwargs):
        state["phase"], state["done"] = phase_of(kwargs), []
        return method(self, *args, **kwargs)

    return wrapped


store = ActivationStore
store.create_run = enter(store.create_run, lambda kwargs: "create")
RunWriter.merge_counts = enter(RunWriter.merge_counts, lambda kwargs: kwargs["unit"])


def watch(name):
    method = getattr(zarr.storage.LocalStore, name)

    async def wrapped(self, path, *args, **kwargs):
        ready = all(any(re.fullmatch(a, d) for d in state["done"]) for a in after)
        if state["phase"] == phase and name == op and re.fullmatch(key, path) and ready:
            Path(where).write_text(json.dumps({**state, "op": name, "key": path}))
            os.kill(os.getpid(), signal.SIGKILL)
        state["done"].append(name + " " + path)
        return await method(self, path, *args, **kwargs)

    setattr(zarr.storage.LocalStore, name, wrapped)


for name in ("set", "delete", "delete_dir"):
    watch(name)
sys.exit(main(sys.argv[2:]))
"""


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """Where a watched extraction dies (see ``_KILL_AT``) and what the store holds then."""

    name: str
    phase: str  # "create", or the key of the unit being committed
    op: str
    key: str
    after: tuple[str, ...]  # operations (regexes) done in this phase before it dies
    committed: int  # units committed when it died, of 12
    armed: bool  # a write was under way: its journal is armed until a writer rolls it back


_MARKER = "m/base/_journal/zarr\\.json"  # written last to arm a write, deleted first to commit it
_JOURNAL = "m/base/_journal"
# Each chain kills an extraction at its first point, then kills the rerun (--resume once a unit
# is committed) at the next point, and so on; a last rerun completes the run. The 4th of the 12
# units is en/3, the last zh/3.
KILL_CHAINS = {
    "create": (
        # the run's arrays are being made under an armed "create" journal
        KillPoint(
            "arrays", "create", "set", "m/base/n_active/zarr\\.json", (f"set {_MARKER}",),
            committed=0, armed=True,
        ),
        # the run is made and its journal deleted, the consolidated metadata not yet updated
        KillPoint(
            "unconsolidated", "create", "set", "zarr\\.json", (f"delete_dir {_JOURNAL}",),
            committed=0, armed=False,
        ),
    ),
    "commit": (
        # the journal is armed, n_active and n_tokens are written, the moments not
        KillPoint(
            "some-arrays", "en/3", "set", "m/base/act_sum/c/.*",
            (f"set {_MARKER}", "set m/base/n_active/c/.*", "set m/base/n_tokens/c/.*"),
            committed=3, armed=True,
        ),
        # every array but the last (seq_n_tokens) written
        KillPoint(
            "all-but-one-array", "en/3", "set", "m/base/seq_n_tokens/c/.*",
            (f"set {_MARKER}", "set m/base/act_sqsum/c/.*", "set m/base/seq_n_active/c/.*"),
            committed=3, armed=True,
        ),
        # every array and the run's attributes (which name the unit) written, journal armed
        KillPoint(
            "attributes-written", "en/3", "delete", _MARKER,
            ("set m/base/seq_n_tokens/c/.*", "set m/base/zarr\\.json"),
            committed=3, armed=True,
        ),
        # the journal's marker deleted (the commit point passed), the rest of it not
        KillPoint(
            "journal-deleted", "en/3", "delete_dir", _JOURNAL, (f"delete {_MARKER}",),
            committed=4, armed=False,
        ),
    ),
    "last": (
        # the last unit's arrays and attributes written, its journal armed
        KillPoint(
            "attributes-written", "zh/3", "delete", _MARKER,
            ("set m/base/seq_n_tokens/c/.*", "set m/base/zarr\\.json"),
            committed=11, armed=True,
        ),
        # the journal's marker deleted (the commit point passed), the rest of it not
        KillPoint(
            "journal-deleted", "zh/3", "delete_dir", _JOURNAL, (f"delete {_MARKER}",),
            committed=12, armed=False,
        ),
    ),
    "last-unconsolidated": (
        # the last unit committed, the consolidated metadata not yet updated
        KillPoint(
            "unconsolidated", "zh/3", "set", "zarr\\.json", (f"delete_dir {_JOURNAL}",),
            committed=12, armed=False,
        ),
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(KILL_CHAINS.values()), ids=list(KILL_CHAINS))
def test_killed_anywhere_resume_is_bit_exact(
    tmp_path: Path,
    llama: Path,
    data: Path,
    reference: Path,
    chain: tuple[KillPoint, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Killed anywhere, even inside a commit, a rerun redoes exactly the uncommitted units."""
    store = tmp_path / "killed.zarr"
    command = _cli_command(llama, data, store)
    units = [f"{lang}/{i}" for lang in TEXTS for i in range(4)]  # in commit order
    committed, armed = 0, False  # what the last killed process left
    for point in chain:
        where = tmp_path / f"{point.name}.json"
        spec = json.dumps([str(where), point.phase, point.op, point.key, point.after])
        resume = ["--resume"] if committed else []
        killed = subprocess.run(
            [sys.executable, "-c", _KILL_AT, spec, *command[3:], *resume],
            capture_output=True,
            text=True,
        )
        # it rolled back the write the process before it left armed ...
        assert ("rolling back an interrupted" in killed.stderr) == armed, killed.stderr
        # ... and died by SIGKILL at the point asked for
        assert killed.returncode == -signal.SIGKILL, (point.name, killed.stderr)
        died = json.loads(where.read_text())
        assert (died["phase"], died["op"]) == (point.phase, point.op)
        assert re.fullmatch(point.key, died["key"])
        for done in point.after:
            assert any(re.fullmatch(done, op) for op in died["done"]), (point.name, done, died)
        committed, armed = point.committed, point.armed

        # `langneurons validate` names a write left armed
        code, _, err = run_cli(capsys, "validate", store)
        if armed:
            assert code == 1, point.name
            assert (
                "run 'm/base': interrupted write (journal present); run `langneurons repair" in err
            )
        else:
            assert (code, err) == (0, ""), point.name
        if committed:
            # a rerun without --resume is refused, naming the committed units (run on a copy, so
            # that the next process finds the store as the killed one left it)
            copy = tmp_path / f"{point.name}.zarr"
            shutil.copytree(store, copy)
            code, _, err = run_cli(capsys, *_cli_command(llama, data, copy)[3:])
            assert code == 1, point.name
            assert f"already holds {committed} of this command's units" in err, point.name
            # ... and, like any writer, it rolled back the dead write first
            assert open_store(copy).committed_units("m/base") == set(units[:committed])

    resumed = subprocess.run(
        [*command, *(["--resume"] if committed else [])], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert ("rolling back an interrupted" in resumed.stderr) == armed, resumed.stderr
    assert f"extracted {12 - committed} unit(s) ({committed} already done)" in resumed.stdout
    _assert_same_store(store, reference)
    assert open_store(store).validate() == []


@pytest.mark.parametrize(
    "split",
    [(["--shard", "0/2"], ["--shard", "1/2"]), (["--languages", "en,zh"], ["--languages", "de"])],
    ids=["shards", "languages"],
)
def test_two_processes_give_the_single_process_store(
    tmp_path: Path, llama: Path, data: Path, reference: Path, split: tuple[list[str], list[str]]
) -> None:
    store = tmp_path / "parallel.zarr"
    procs = [
        subprocess.Popen(_cli_command(llama, data, store, *args), stderr=subprocess.PIPE, text=True)
        for args in split
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _assert_same_store(store, reference)


# ----------------------------------------------------------------------------- bad input
def test_model_directory_without_config(tmp_path: Path, data: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFormatError, match="has no config.json; point --model to a directory"):
        extract(tmp_path / "empty", data, tmp_path / "s.zarr", "r")
    assert not (tmp_path / "s.zarr").exists()


def test_missing_gguf_file(tmp_path: Path, data: Path) -> None:
    with pytest.raises(InputFormatError, match="GGUF file .*nope.gguf' does not exist"):
        extract(tmp_path, data, tmp_path / "s.zarr", "r", gguf_file="nope.gguf")


def test_resume_into_other_data_or_model_is_refused(
    tmp_path: Path, llama: Path, data: Path
) -> None:
    store = tmp_path / "s.zarr"
    extract(llama, data, store, "r", device="cpu", dtype="float32", progress=False)
    other = write_data(tmp_path / "other.jsonl", n_items=2)
    with pytest.raises(
        StoreValidationError, match=r"extracted with a different data \(corpus_hash"
    ):
        extract(llama, other, store, "r", device="cpu", dtype="float32", resume=True)
    other_model = tiny_model("llama", seed=9, path=tmp_path / "other-model", layers=2)
    with pytest.raises(StoreValidationError, match="different model"):
        extract(other_model, data, store, "r", device="cpu", dtype="float32", resume=True)
    with pytest.raises(RunExistsError, match="pass --resume to complete it"):
        extract(llama, data, store, "r", device="cpu", dtype="float32")


def test_unknown_language_and_bad_parameters(tmp_path: Path, llama: Path, data: Path) -> None:
    with pytest.raises(ParameterError, match="language 'fr' is not in the data"):
        extract(llama, data, tmp_path / "s.zarr", "r", languages=["fr"], device="cpu")
    with pytest.raises(ParameterError, match="batch_tokens must be a positive integer, got 0"):
        extract(llama, data, tmp_path / "s.zarr", "r", batch_tokens=0)
    with pytest.raises(ParameterError, match="--shard 3/2 is out of range"):
        extract(llama, data, tmp_path / "s.zarr", "r", shard="3/2")
    with pytest.raises(ParameterError, match="is not supported .*--hook-module PATTERN|matches no"):
        extract(llama, data, tmp_path / "s.zarr", "r", hook_module="model.nothing.*.act")
    assert not (tmp_path / "s.zarr").exists()


def test_unknown_architecture_and_hook_module(tmp_path: Path, data: Path) -> None:
    """An unregistered model_type is refused with the fix; --hook-module makes it work."""
    import transformers

    config = transformers.GPTJConfig(
        vocab_size=320, n_positions=256, n_embd=32, n_layer=2, n_head=4, rotary_dim=4
    )
    torch.manual_seed(0)
    model = transformers.GPTJForCausalLM(config)
    path = tmp_path / "gptj"
    model.save_pretrained(path)
    from langneurons.extract.tiny import byte_tokenizer

    byte_tokenizer().save_pretrained(path)
    with pytest.raises(ParameterError, match=r"architecture 'gptj' is not supported \(supported: "):
        extract(path, data, tmp_path / "s.zarr", "r", device="cpu")
    assert not (tmp_path / "s.zarr").exists()
    report = extract(
        path,
        data,
        tmp_path / "s.zarr",
        "r",
        device="cpu",
        dtype="float32",
        hook_module="transformer.h.*.mlp.act",
        progress=False,
    )
    assert report["units_done"] == 3
    ds = open_store(tmp_path / "s.zarr").open_run("r")
    assert ds.sizes["neuron"] == 4 * 32 and ds.attrs["hook_point"] == "transformer.h.{i}.mlp.act"


def test_remote_code_needs_the_flag(tmp_path: Path, llama: Path, data: Path) -> None:
    import shutil

    path = tmp_path / "remote"
    shutil.copytree(llama, path)
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParameterError, match="ships its own code .*rerun with --trust-remote-code"):
        extract(path, data, tmp_path / "s.zarr", "r", device="cpu")
    assert not (tmp_path / "s.zarr").exists()


def test_generate_fills_missing_responses(tmp_path: Path, llama: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps(
                {"language": lang, "id": f"q{i}", "prompt": f"{text} {i}"}, ensure_ascii=False
            )
            for lang, (text, _) in TEXTS.items()
            for i in range(2)
        )
        + "\n"
    )
    with pytest.raises(InputFormatError, match="missing field 'response'"):
        extract(llama, prompts, tmp_path / "s.zarr", "r", device="cpu")
    store = tmp_path / "s.zarr"
    report = extract(
        llama,
        prompts,
        store,
        "r",
        device="cpu",
        dtype="float32",
        generate=True,
        max_new_tokens=5,
        progress=False,
    )
    saved = tmp_path / "s.zarr.r.generated.jsonl"
    assert saved.exists()
    from langneurons.extract.corpus import read_records

    records = read_records(saved)
    assert len(records) == 6 and all(r.response for r in records)
    ds = open_store(store).open_run("r")
    assert int(ds.n_tokens.sel(role="response").min()) >= 1
    assert report["tokens"]["response"] == int(ds.n_tokens.sel(role="response").sum())
    # a second run reuses the saved generations (same records, same model)
    mtime = saved.stat().st_mtime_ns
    extract(
        llama,
        prompts,
        store,
        "r",
        device="cpu",
        dtype="float32",
        generate=True,
        max_new_tokens=5,
        resume=True,
        progress=False,
    )
    assert saved.stat().st_mtime_ns == mtime


def test_mapo_json_is_extracted(tmp_path: Path, llama: Path) -> None:
    items = [
        {
            "lang": "German",
            "instruction": "Wie viel ist 2 + 3?",
            "answers": [{"generated": "2 + 3 = 5."}, {"generated": "Fünf."}],
        },
        {
            "lang": "English",
            "instruction": "What is 2 + 3?",
            "answers": [{"generated": "2 + 3 = 5."}],
        },
    ]
    data = tmp_path / "mapo.json"
    data.write_text(json.dumps(items, ensure_ascii=False))
    extract(
        llama,
        data,
        tmp_path / "s.zarr",
        "r",
        device="cpu",
        dtype="float32",
        progress=False,
        per_sequence=True,
    )
    ds = open_store(tmp_path / "s.zarr").open_run("r")
    assert list(ds.language.values) == ["de", "en"]
    assert ds.sizes["sequence"] == 3
    assert list(ds.seq_language.values) == ["de", "de", "en"]


def test_response_nll_matches_a_per_sequence_computation(llama: Path, data: Path) -> None:
    from langneurons.extract.ablation import deactivate, response_nll
    from langneurons.extract.corpus import read_records

    loaded = load_model(llama, device="cpu", dtype="float32")
    records = read_records(data)
    total, count = response_nll(
        loaded, records, batch_tokens=64, max_length=1024, chat_template=True
    )
    expected, n = 0.0, 0
    with torch.no_grad():
        for record in records:
            enc = encode(record, loaded.tokenizer, chat_template=True, max_length=1024)
            ids = torch.tensor([enc.prompt + enc.response])
            logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].double(), -1)
            for t in range(len(enc.prompt), ids.shape[1]):
                expected -= float(logp[t - 1, ids[0, t]])
                n += 1
    assert count == n
    assert total == pytest.approx(expected, rel=1e-5)
    # switching neurons off changes the likelihood, and the hooks are gone afterwards
    with deactivate(loaded, {0: np.arange(10), 1: np.arange(5)}):
        off, _ = response_nll(loaded, records, batch_tokens=64, max_length=1024, chat_template=True)
    assert off != pytest.approx(total, rel=1e-9)
    again, _ = response_nll(loaded, records, batch_tokens=64, max_length=1024, chat_template=True)
    assert again == pytest.approx(total, rel=1e-9)


# ------------------------------------------------------------------ models already in memory
def test_model_objects_count_like_the_path(tmp_path: Path, llama: Path, data: Path) -> None:
    import transformers

    from langneurons.extract.engine import from_pretrained_objects

    model = transformers.AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama)
    common = {"device": "cpu", "dtype": "float32", "per_sequence": True, "progress": False}
    extract(llama, data, tmp_path / "path.zarr", "r", **common)
    extract(model, data, tmp_path / "objects.zarr", "r", tokenizer=tokenizer, **common)
    loaded = from_pretrained_objects(model, tokenizer, name="my-model")
    extract(loaded, data, tmp_path / "loaded.zarr", "r", **common)
    want = open_store(tmp_path / "path.zarr").open_run("r").load()
    for store in ("objects.zarr", "loaded.zarr"):
        got = open_store(tmp_path / store).open_run("r").load()
        for name in want.data_vars:
            assert got[name].values.tobytes() == want[name].values.tobytes(), (store, name)
    assert open_store(tmp_path / "loaded.zarr").run_metadata("r").model == "my-model"
    # the same identity: objects resume a run the path started, and the other way round
    report = extract(model, data, tmp_path / "path.zarr", "r", tokenizer=tokenizer, resume=True,
                     **common)  # fmt: skip
    assert report["units_skipped"] == 3 and report["units_done"] == 0
    with pytest.raises(ParameterError, match=r"a model object needs its tokenizer: pass "):
        extract(model, data, tmp_path / "x.zarr", "r", progress=False)
    with pytest.raises(ParameterError, match=r"tokenizer= goes with a model object"):
        extract(llama, data, tmp_path / "x.zarr", "r", tokenizer=tokenizer, progress=False)
    with pytest.raises(ParameterError, match=r"model must be a transformers PreTrainedModel"):
        from_pretrained_objects(object(), tokenizer)
    assert not (tmp_path / "x.zarr").exists()


# ------------------------------------------------------------------ progress
@pytest.fixture
def progress_lines() -> Any:
    """Progress shown as plain lines into a buffer (every update), reset afterwards."""
    import io

    from langneurons import _progress

    buffer = io.StringIO()
    _progress.configure("lines", interval=0.0, stream=buffer)
    yield buffer
    _progress.configure("log")


def test_extract_progress_counts_the_work_left(
    tmp_path: Path, llama: Path, data: Path, progress_lines: Any
) -> None:
    store = tmp_path / "s.zarr"
    common = {"device": "cpu", "dtype": "float32", "unit_size": 2}
    extract(llama, data, store, "r", languages=["en"], progress=False, **common)
    assert progress_lines.getvalue() == ""  # progress=False shows nothing
    report = extract(llama, data, store, "r", resume=True, **common)
    lines = progress_lines.getvalue().splitlines()
    assert lines and all(line.startswith("[extract] ") for line in lines)
    # the total counts the tokens of the 4 units still to do (de, zh), not the 2 done (en)
    tokens = report["tokens"]["prompt"] + report["tokens"]["response"]
    assert report["units_skipped"] == 2 and report["units_done"] == 4
    assert re.match(rf"\[extract\] {tokens}/{tokens} tok \(100%\), ", lines[-1]), lines[-1]
    assert lines[0].endswith("unit de/0 (1/4)") and lines[-1].endswith("unit zh/1 (4/4)")


def test_import_progress_per_file(tmp_path: Path, progress_lines: Any) -> None:
    from langneurons.extract.importers import read_lape

    for lang in ("en", "de"):
        torch.save({"n": 5, "over_zero": torch.zeros((2, 3), dtype=torch.int64)},
                   tmp_path / f"{lang}.pt")  # fmt: skip
    read_lape([tmp_path / "en.pt", tmp_path / "de.pt"], ["en", "de"])
    lines = progress_lines.getvalue().splitlines()
    assert lines[0].startswith("[import lape] 1/2 file (50%)") and lines[0].endswith("en.pt")
    assert lines[-1].startswith("[import lape] 2/2 file (100%)") and lines[-1].endswith("de.pt")


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_out_of_space_during_extraction_then_resume_is_bit_exact(
    tmp_path: Path,
    llama: Path,
    data: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
) -> None:
    """The disk fills up inside a unit's commit: one line, the run keeps its committed units,
    and once there is room `--resume` completes it exactly as an uninterrupted extraction."""
    original = zarr.storage.LocalStore.set
    state = {"chunks": 0}

    async def full_disk(store: Any, key: str, value: Any) -> None:
        if "/n_active/c/" in key:
            state["chunks"] += 1
            if state["chunks"] == 20:  # some units in, inside one unit's writes
                raise OSError(code, os.strerror(code), key)
        await original(store, key, value)

    store = tmp_path / "full.zarr"
    with monkeypatch.context() as m:
        m.setattr(zarr.storage.LocalStore, "set", full_disk)
        c, out, err = run_cli(capsys, *_cli_command(llama, data, store)[3:])
    assert c == 1 and state["chunks"] >= 20, err  # zarr writes a unit's chunks concurrently
    assert re.fullmatch(
        r"langneurons: error: (out of disk space|over the file-size limit \(ulimit -f\)) writing "
        r"m/base/n_active/c/\S+ \(.+\); free some space or raise the limit and run the command "
        r"again \(an interrupted store write is rolled back by `langneurons repair STORE`\)\n",
        err,
    ), err
    committed = len(open_store(store).committed_units("m/base"))
    assert 0 < committed < 12
    assert run_cli(capsys, "repair", store)[0] == 0
    assert open_store(store).validate() == []
    assert len(open_store(store).committed_units("m/base")) == committed
    c, out, err = run_cli(capsys, *_cli_command(llama, data, store, "--resume")[3:])
    assert c == 0, err
    assert f"({committed} already done)" in out
    _assert_same_store(store, reference)
