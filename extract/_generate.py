"""Generating missing responses (``extract --generate``) before they are counted.

Greedy generation fills the records that have no response; the completed records are saved
next to the store with the identity that made them, so a resumed run reuses them instead of
generating twice. Public names are re-exported by :mod:`langneurons.extract.engine`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from langneurons.errors import ParameterError
from langneurons.extract import corpus as _corpus
from langneurons.extract._counting import encode
from langneurons.extract._loading import LoadedModel
from langneurons.extract._torchio import require_torch

log = logging.getLogger(__name__)


def generated_path(store: str | os.PathLike[str], run: str) -> Path:
    """Where ``--generate`` saves the completed records: next to the store."""
    base = str(store)
    if "://" in base and not base.startswith("file://"):
        raise ParameterError("--generate saves records next to the store; use a local store path")
    path = Path(base.removeprefix("file://"))
    return path.parent / f"{path.name}.{run.replace('/', '__')}.generated.jsonl"


def generate_missing(
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    store: str | os.PathLike[str],
    run: str,
    *,
    max_new_tokens: int,
    chat_template: bool,
) -> list[_corpus.Record]:
    """Fill missing responses by greedy generation; save the completed records next to the store.

    A saved file made from the same records and model is reused, so a resumed run generates
    nothing twice.
    """
    torch = require_torch()
    target = generated_path(store, run)
    meta_path = target.with_suffix(".meta.json")
    source = {
        "corpus_hash": _corpus.corpus_hash(records),
        **loaded.identity,
        "max_new_tokens": max_new_tokens,
        "chat_template": chat_template,
    }
    if target.exists() and meta_path.exists():
        if json.loads(meta_path.read_text()) == source:
            log.info("reusing generated responses from %s", target)
            return _corpus.read_records(target)
    out: list[_corpus.Record] = []
    tok = loaded.tokenizer
    with torch.inference_mode():
        for record in records:
            if record.response:
                out.append(record)
                continue
            enc = encode(record, tok, chat_template=chat_template, max_length=10**9)
            ids = torch.tensor([enc.prompt], device=loaded.device)
            new = loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, ids.shape[1] :]
            text = tok.decode(new, skip_special_tokens=True).strip() or "(empty)"
            out.append(dataclasses.replace(record, response=text))
    _corpus.write_records(target, out)
    meta_path.write_text(json.dumps(source, indent=2))
    log.info("saved %d generated responses to %s", sum(not r.response for r in records), target)
    return out


def generate_answers(
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    *,
    max_new_tokens: int,
    chat_template: bool,
    batch_size: int,
    answer_end: str | None = None,
) -> list[str]:
    """Greedy answers to the records' prompts, in record order (batched, left-padded).

    Prompts of similar length are batched together; each batch is padded on the left so every
    answer starts right after its prompt. With ``answer_end`` (e.g. a blank line, ``"\n\n"``,
    after few-shot examples), generation stops once every answer of the batch holds it, and
    each answer is cut before it.
    """
    torch = require_torch()
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [
        encode(r, tok, chat_template=chat_template, max_length=10**9).prompt for r in records
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.tensor(
                [[pad] * (width - len(prompts[i])) + list(prompts[i]) for i in batch],
                device=loaded.device,
            )
            mask = torch.tensor(
                [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch],
                device=loaded.device,
            )
            new = loaded.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                **({"stop_strings": [answer_end], "tokenizer": tok} if answer_end else {}),
            )[:, width:]
            for i, row in zip(batch, new, strict=True):
                text = tok.decode(row, skip_special_tokens=True)
                out[i] = (text.split(answer_end)[0] if answer_end else text).strip()
    return out
