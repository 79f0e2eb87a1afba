"""Tokenizing, batching and counting: one forward pass over prompt + response per record.

For every record the prompt and the response are tokenized separately and their ids
concatenated, so each token is counted under its role (``prompt`` / ``response``); padding is
never counted. Sums of activations (optional: ``moments=True``, ``extract --sums``) are
accumulated in float64 and rounded to multiples of
``MOMENT_GRID`` (2**-20) before they leave here: sums of such numbers are exact in float64, so
merging units in any order gives bit-identical stores. Public names are re-exported by
:mod:`langneurons.extract.engine`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from langneurons.errors import ParameterError
from langneurons.extract._loading import LoadedModel
from langneurons.extract._torchio import require_torch
from langneurons.extract.corpus import Record
from langneurons.names import (
    ACT_SQSUM,
    ACT_SUM,
    N_ACTIVE,
    N_ROUTED,
    N_TOKENS,
    SEQ_N_ACTIVE,
    SEQ_N_ROUTED,
    SEQ_N_TOKENS,
)

MOMENT_GRID = 2.0**-20


# --------------------------------------------------------------------------- tokenization
@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of one record: prompt ids then response ids, concatenated without re-tokenizing."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.response)


def encode(record: Record, tokenizer: Any, *, chat_template: bool, max_length: int) -> Encoded:
    """Tokenize prompt and response separately; truncate the response first, then the prompt."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ParameterError(
                "--chat-template was given but the tokenizer has no chat template; drop the flag"
            )
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": record.prompt}],
            add_generation_prompt=True,
            tokenize=True,
        )
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
    else:
        prompt = tokenizer(record.prompt, add_special_tokens=True)["input_ids"]
    response = tokenizer(record.response or "", add_special_tokens=False)["input_ids"]
    prompt, response = list(prompt)[:max_length], list(response)
    response = response[: max(0, max_length - len(prompt))]
    return Encoded(tuple(int(x) for x in prompt), tuple(int(x) for x in response))


def bucket_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group sequence indices into batches whose padded size stays within ``batch_tokens``.

    Sequences are sorted by length (longest first, ties by index) so batches hold similar
    lengths and little padding; a sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- counting
class Accumulator:
    """Device-side sums for one unit: counts, moments, and optional per-sequence counts."""

    def __init__(
        self,
        torch: Any,
        n_layers: int,
        n_neurons: int,
        n_seq: int,
        device: Any,
        per_sequence: bool,
        moments: bool = False,
    ) -> None:
        self.torch = torch
        self.n_neurons = n_neurons
        self.active = torch.zeros((2, n_layers, n_neurons), dtype=torch.int64, device=device)
        shape = (2, n_layers, n_neurons) if moments else (0,)
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.squares = torch.zeros(shape, dtype=torch.float64, device=device)
        self.moments = moments
        self.seq = (
            torch.zeros((n_seq, 2, n_layers, n_neurons), dtype=torch.int32, device=device)
            if per_sequence
            else None
        )
        self.mask: Any = None  # [B, T, 2] float32 role mask of the current batch
        self.rows: Any = None  # unit-local sequence rows of the current batch

    def __call__(self, layer: int, output: Any) -> None:
        torch = self.torch
        if output.shape[-1] != self.n_neurons:
            raise ParameterError(
                f"the hooked module of layer {layer} outputs {output.shape[-1]} values per token, "
                f"expected {self.n_neurons}; name the activation module with --hook-module"
            )
        b, t, _ = self.mask.shape
        x = output.reshape(-1, self.n_neurons)
        if x.shape[0] != b * t:
            raise ParameterError(
                f"the hooked module of layer {layer} saw {x.shape[0]} tokens, expected {b * t}; "
                "name the activation module with --hook-module"
            )
        positive = (x > 0).float()
        roles = self.mask.reshape(b * t, 2).T  # [2, B*T]
        # float32 matmuls count exactly: each sum is at most the batch's tokens (< 2**24)
        self.active[:, layer] += (roles @ positive).to(torch.int64)
        if self.moments:  # two more passes over the activations: only when asked for
            x = x.float()
            self.total[:, layer] += (roles @ x).double()
            self.squares[:, layer] += (roles @ (x * x)).double()
        if self.seq is not None:
            per_seq = torch.einsum("btr,btn->brn", self.mask, positive.view(b, t, -1))
            self.seq[self.rows, :, layer] += per_seq.to(torch.int32)


def forward_kwargs(model: Any) -> dict[str, Any]:
    """Ask for no cache and, where supported, logits of the last position only."""
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


def count_unit(
    loaded: LoadedModel,
    encoded: Sequence[Encoded],
    *,
    batch_tokens: int,
    per_sequence: bool,
    moments: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the model over some records and return their summed counts (numpy, on the host).

    ``moments``: also the sums of activations and of their squares (``act_sum``/``act_sqsum``).
    A mixture-of-experts model (a :class:`~langneurons.extract._moe.MoePlan`) is counted per
    expert: ``n_active`` is ``[role, layer, expert, neuron]`` and ``n_routed`` (and
    ``seq_n_routed``) come with it; ``moments`` is refused there.
    """
    from langneurons.extract._moe import MoeAccumulator, capture_moe, is_moe_plan
    from langneurons.extract.architectures import capture

    torch = require_torch()
    moe = is_moe_plan(loaded.plan)
    acc: Accumulator | MoeAccumulator
    if moe:
        if moments:
            raise ParameterError(
                "--sums is not supported for mixture-of-experts models (sums per expert are not "
                "in the run layout); drop --sums"
            )
        acc = MoeAccumulator(torch, loaded.plan, len(encoded), loaded.device, per_sequence)
        hooks: Any = capture_moe(loaded.plan, acc)
    else:
        n_neurons = loaded.plan.neurons or probe_neurons(loaded)
        acc = Accumulator(
            torch, loaded.n_layers, n_neurons, len(encoded), loaded.device, per_sequence, moments
        )
        hooks = capture(loaded.plan, acc)
    pad = int(loaded.tokenizer.pad_token_id or 0)
    kwargs = forward_kwargs(loaded.model)
    tokens = torch.zeros((len(encoded), 2), dtype=torch.int64)
    for i, enc in enumerate(encoded):
        tokens[i, 0], tokens[i, 1] = len(enc.prompt), len(enc.response)
    with torch.inference_mode(), hooks:
        for batch in bucket_batches([e.length for e in encoded], batch_tokens):
            ids, mask = pad_batch([encoded[i] for i in batch], pad)
            attention = mask.sum(-1).to(torch.int64)
            acc.mask = mask.to(loaded.device)
            acc.rows = torch.tensor(batch, dtype=torch.int64, device=loaded.device)
            loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=attention.to(loaded.device),
                **kwargs,
            )
            if on_batch is not None:
                on_batch(int(attention.sum()))
    if isinstance(acc, MoeAccumulator):
        acc.verify()
    out = {
        N_ACTIVE: acc.active.cpu().numpy(),
        N_TOKENS: tokens.sum(0).numpy(),
        SEQ_N_TOKENS: tokens.numpy(),
    }
    if isinstance(acc, MoeAccumulator):
        out[N_ROUTED] = acc.routed_count.cpu().numpy()
        if acc.seq is not None:
            out[SEQ_N_ACTIVE] = acc.seq.cpu().numpy()
            out[SEQ_N_ROUTED] = acc.seq_routed.cpu().numpy()
        return out
    if moments:
        out[ACT_SUM] = to_grid(acc.total.cpu().numpy())
        out[ACT_SQSUM] = to_grid(acc.squares.cpu().numpy())
    if acc.seq is not None:
        out[SEQ_N_ACTIVE] = acc.seq.cpu().numpy()
    return out


def pad_batch(encoded: Sequence[Encoded], pad: int) -> tuple[Any, Any]:
    """Right-padded token ids ``[B, T]`` and a float role mask ``[B, T, 2]`` (prompt, response)."""
    torch = require_torch()
    width = max(e.length for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(encoded), width, 2), dtype=torch.float32)
    for row, enc in enumerate(encoded):
        p, r = len(enc.prompt), len(enc.response)
        ids[row, : p + r] = torch.tensor(enc.prompt + enc.response, dtype=torch.int64)
        mask[row, :p, 0] = 1.0
        mask[row, p : p + r, 1] = 1.0
    return ids, mask


def to_grid(values: np.ndarray) -> np.ndarray:
    """Round to multiples of MOMENT_GRID so that later sums are exact in any order."""
    return np.round(values / MOMENT_GRID) * MOMENT_GRID


def probe_neurons(loaded: LoadedModel) -> int:
    """Neurons per layer for a pattern-resolved plan: run one token and look."""
    from langneurons.extract.architectures import capture

    torch = require_torch()
    seen: dict[int, int] = {}
    with (
        torch.inference_mode(),
        capture(loaded.plan, lambda i, out: seen.setdefault(i, out.shape[-1])),
    ):
        ids = torch.tensor([[int(loaded.tokenizer.pad_token_id or 0)]], device=loaded.device)
        loaded.model(input_ids=ids, use_cache=False)
    sizes = set(seen.values())
    if len(sizes) != 1 or len(seen) != loaded.n_layers:
        raise ParameterError(
            f"the hooked modules output {sorted(sizes)} values per token across {len(seen)} of "
            f"{loaded.n_layers} layers; name one activation module per layer with --hook-module"
        )
    loaded.plan = dataclasses.replace(loaded.plan, neurons=sizes.pop())
    return int(loaded.plan.neurons)
