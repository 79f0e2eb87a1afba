"""Simulated runs with known truth, in the run schema, for the calibration suite.

A *truth* fixes, per (language, layer, neuron), the population activation probability
``p_true`` (the population ratio ``E[a] / E[t]``, the quantity every estimator targets) and
which (neuron, language) pairs carry a true preference. A *replicate* draws sequences from it:

- ``heterogeneity="independent"``: every token of language k fires with ``P[k, neuron]``;
- ``"beta-binomial"``: sequence i's probability is ``Beta`` with mean P and intra-class
  correlation ``icc`` (``a_i ~ Bin(t_i, p_i)``);
- ``"logit-normal"``: ``logit p_i = logit P0 + sd * z_i`` (P0 is the conditional centre; the
  marginal mean, integrated by Gauss-Hermite, is the truth).

The latent ``z_i`` of sequence i and neuron j is standard normal and mixes a part shared by
every neuron of the sequence (weight ``neuron_share``) with a neuron's own part; each part
mixes an item effect (weight ``item_share`` when items have several responses, or when
``rho > 0``) with a sequence effect. Item effects of one item are correlated across languages
with ``rho`` (parallel translations). For beta-binomial, ``z`` enters through a Gaussian
copula (``p = F_Beta^{-1}(Phi(z))``), so the marginal of each ``p_i`` is exactly Beta.

Items: ``responses`` R sequences per item (``seq_id`` repeated R times within a language, the
same ids in every language). Lengths: fixed, or lognormal (sigma 0.75) with the same mean.
Everything is vectorised numpy; a replicate of 4 languages x 32 sequences x 1,024 neurons
takes a few milliseconds (beta-binomial a few tens).

This module imports nothing of langneurons, so the simulator stays valid while the analysis
changes: it builds the Dataset with the names of the on-disk schema spelled out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import special

# the run schema's names (store/schema.py, langneurons/names.py), spelled out on purpose
LANGUAGE, ROLE, LAYER, NEURON, SEQUENCE = "language", "role", "layer", "neuron", "sequence"
ROLES = ("prompt", "response")

Heterogeneity = Literal["independent", "beta-binomial", "logit-normal"]
Lengths = Literal["fixed", "lognormal"]

_LEVELS = np.array([0.5, 0.7, 1.0, 1.4, 2.0])  # base-rate multipliers of sparse neurons
_DENSE_LEVELS = np.array([0.8, 0.9, 1.0, 1.1, 1.2])  # of dense ones (base rate > 0.1)
_GRID = np.linspace(-8.5, 8.5, 2049)  # latent grid of the beta-binomial copula tables
_HERMITE = np.polynomial.hermite_e.hermegauss(40)  # nodes, weights for E[f(Z)], Z ~ N(0, 1)


@dataclasses.dataclass(frozen=True)
class Shape:
    """The shape of a simulated run: sizes, dependence, lengths, rates and effects."""

    languages: int = 4
    layers: int = 8
    neurons: int = 128  # per layer
    sequences: int = 32  # per language
    responses: int = 1  # sequences per item (seq_id repeated within a language)
    rho: float = 0.0  # correlation of an item's effect across languages
    item_share: float = 0.5  # share of the latent variance that is the item's (responses > 1)
    heterogeneity: Heterogeneity = "independent"
    icc: float = 0.05  # beta-binomial intra-class correlation
    sd: float = 1.0  # logit-normal sd of the sequence effect
    neuron_share: float = 0.5  # share of the latent variance common to all neurons
    lengths: Lengths = "fixed"
    length: int = 64  # mean response tokens per sequence
    base_rate: float = 0.01  # median P of a neuron
    effect_fraction: float = 0.1  # neurons with a preferred language
    effect: float = 1.0  # relative: P[preferred] = P (1 + effect)

    def __post_init__(self) -> None:
        if self.sequences % self.responses:
            raise ValueError(
                f"sequences={self.sequences} is not a multiple of responses={self.responses}"
            )
        if self.heterogeneity not in ("independent", "beta-binomial", "logit-normal"):
            raise ValueError(f"unknown heterogeneity {self.heterogeneity!r}")
        if self.lengths not in ("fixed", "lognormal"):
            raise ValueError(f"unknown lengths {self.lengths!r}")

    @property
    def items(self) -> int:
        """Items per language."""
        return self.sequences // self.responses

    @property
    def n_cells(self) -> int:
        """Neurons in all layers."""
        return self.layers * self.neurons

    def label(self) -> str:
        """A short description of the cell for tables."""
        het = {
            "independent": "indep",
            "beta-binomial": f"betabin icc={self.icc:g}",
            "logit-normal": f"logitnorm sd={self.sd:g}",
        }[self.heterogeneity]
        parts = [het, f"n={self.sequences}", f"P~{self.base_rate:g}"]
        if self.responses > 1:
            parts.append(f"R={self.responses} rho={self.rho:g}")
        if self.lengths != "fixed":
            parts.append("unequal len")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Truth:
    """Known truth of a cell: the conditional centres, the population P and the effects."""

    shape: Shape
    centre: NDArray[np.float64]  # [language, cell]: P (beta-binomial, independent) or P0
    p_true: NDArray[np.float64]  # [language, cell]: population ratio E[a] / E[t]
    preferred: NDArray[np.bool_]  # [language, cell]: H1 "P[k] > P[rest]" true
    effect_neuron: NDArray[np.bool_]  # [cell]

    @property
    def null_neuron(self) -> NDArray[np.bool_]:
        """Neurons with the same P in every language (every pair at the boundary of H0)."""
        return ~self.effect_neuron


def _marginal(centre: NDArray[np.float64], shape: Shape) -> NDArray[np.float64]:
    """Population mean of the per-sequence probability for a conditional centre."""
    if shape.heterogeneity != "logit-normal":
        return centre.copy()
    nodes, weights = _HERMITE
    logit = special.logit(centre)[..., None] + shape.sd * nodes
    return np.asarray(special.expit(logit) @ (weights / weights.sum()))


def make_truth(shape: Shape, seed: int) -> Truth:
    """Draw a cell's truth: base rates from five levels, effects placed U-shaped over layers.

    Effect neurons (``effect_fraction`` of all) prefer one language, drawn uniformly; they are
    denser in the first and last layers (weights ``1 + 2 d^2``, d the distance from the middle
    in half-depths), so layer profiles have stages.
    """
    rng = np.random.default_rng([seed, 17])
    m, k = shape.n_cells, shape.languages
    levels = _DENSE_LEVELS if shape.base_rate > 0.1 else _LEVELS
    base = np.clip(shape.base_rate * levels[rng.integers(0, levels.size, m)], 1e-6, 0.9)
    layer = np.repeat(np.arange(shape.layers), shape.neurons)
    half = max((shape.layers - 1) / 2.0, 1.0)
    weight = 1.0 + 2.0 * ((layer - (shape.layers - 1) / 2.0) / half) ** 2
    n_effect = int(round(shape.effect_fraction * m))
    chosen = rng.choice(m, size=n_effect, replace=False, p=weight / weight.sum())
    effect_neuron = np.zeros(m, dtype=bool)
    effect_neuron[chosen] = True
    centre = np.broadcast_to(base, (k, m)).copy()
    preferred = np.zeros((k, m), dtype=bool)
    lang = rng.integers(0, k, n_effect)
    preferred[lang, chosen] = True
    centre[preferred] = np.minimum(centre[preferred] * (1.0 + shape.effect), 0.95)
    return Truth(shape, centre, _marginal(centre, shape), preferred, effect_neuron)


def shifted(
    truth: Truth, fraction: float, shift: float, seed: int, languages: tuple[int, ...] = ()
) -> Truth:
    """The truth of a shifted run: ``fraction`` of neurons get ``P (1 + shift)`` in
    ``languages`` (indices; every language when empty)."""
    rng = np.random.default_rng([seed, 23])
    m = truth.shape.n_cells
    moved = np.zeros(m, dtype=bool)
    moved[rng.choice(m, size=int(round(fraction * m)), replace=False)] = True
    rows = list(languages) if languages else list(range(truth.shape.languages))
    centre = truth.centre.copy()
    block = centre[np.ix_(rows, np.flatnonzero(moved))]
    centre[np.ix_(rows, np.flatnonzero(moved))] = np.clip(block * (1.0 + shift), 1e-6, 0.95)
    return dataclasses.replace(truth, centre=centre, p_true=_marginal(centre, truth.shape))


def item_effects(shape: Shape, rng: np.random.Generator) -> dict[str, NDArray[np.float64]]:
    """Latent item effects, standard normal, correlated ``rho`` across languages.

    ``common[language, item]`` (shared by all neurons) and ``own[language, item, cell]``.
    """

    def correlated(*tail: int) -> NDArray[np.float64]:
        shared = rng.standard_normal((1, shape.items, *tail))
        own = rng.standard_normal((shape.languages, shape.items, *tail))
        return np.asarray(np.sqrt(shape.rho) * shared + np.sqrt(1.0 - shape.rho) * own)

    return {"common": correlated(), "own": correlated(shape.n_cells)}


def _lengths(shape: Shape, rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    """Response lengths: fixed, or lognormal (sigma 0.75) with the same mean, at least 2."""
    if shape.lengths == "fixed":
        return np.full(n, shape.length, dtype=np.int64)
    sigma = 0.75
    draw = rng.lognormal(np.log(shape.length) - sigma**2 / 2.0, sigma, n)
    return np.maximum(np.rint(draw), 2).astype(np.int64)


def _latent(
    shape: Shape, rng: np.random.Generator, items: dict[str, NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Standard-normal latent ``z[sequence, cell]`` (language-major sequence order)."""
    k, s, m = shape.languages, shape.sequences, shape.n_cells
    item_share = shape.item_share if (shape.responses > 1 or shape.rho > 0) else 0.0
    item_of = np.repeat(np.arange(shape.items), shape.responses)  # within a language
    common = items["common"][:, item_of].reshape(k * s)  # [sequence]
    own = items["own"][:, item_of].reshape(k * s, m)
    common = np.sqrt(item_share) * common + np.sqrt(1 - item_share) * rng.standard_normal(k * s)
    own = np.sqrt(item_share) * own + np.sqrt(1 - item_share) * rng.standard_normal((k * s, m))
    return np.asarray(
        np.sqrt(shape.neuron_share) * common[:, None] + np.sqrt(1 - shape.neuron_share) * own
    )


def _beta_quantiles(mean: float, icc: float) -> NDArray[np.float64]:
    """``F_Beta^{-1}(Phi(_GRID))`` of the Beta with this mean and intra-class correlation."""
    a = mean * (1.0 - icc) / icc
    b = (1.0 - mean) * (1.0 - icc) / icc
    return np.asarray(special.betaincinv(a, b, special.ndtr(_GRID)))


def _probabilities(
    truth: Truth, rng: np.random.Generator, items: dict[str, NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Per-sequence probabilities ``p[sequence, cell]`` under the cell's heterogeneity."""
    shape = truth.shape
    centre = np.repeat(truth.centre, shape.sequences, axis=0)  # [sequence, cell]
    if shape.heterogeneity == "independent":
        return centre
    z = _latent(shape, rng, items)
    if shape.heterogeneity == "logit-normal":
        return np.asarray(special.expit(special.logit(centre) + shape.sd * z))
    out = np.empty_like(centre)
    for value in np.unique(truth.centre):  # a handful of distinct rates: one table each
        where = centre == value
        out[where] = np.interp(z[where], _GRID, _beta_quantiles(float(value), shape.icc))
    return out


def simulate(
    truth: Truth,
    rng: np.random.Generator,
    items: dict[str, NDArray[np.float64]] | None = None,
) -> xr.Dataset:
    """One replicate run in the store schema, drawn from ``truth``.

    ``items``: latent item effects to reuse (two runs of the same prompts); drawn when None.
    The response role follows the cell's model; the prompt role is 8 independent tokens per
    sequence at the population P (present so the run is complete; calibration reads
    responses). Sequences are in language-major order; ``seq_id`` is ``"item0007"`` etc.
    """
    shape = truth.shape
    if items is None:
        items = item_effects(shape, rng)
    k, s, m = shape.languages, shape.sequences, shape.n_cells
    n_seq = k * s
    t = _lengths(shape, rng, n_seq)
    p = _probabilities(truth, rng, items)
    response = rng.binomial(t[:, None], p)
    prompt_t = np.full(n_seq, 8, dtype=np.int64)
    prompt = rng.binomial(8, np.repeat(truth.p_true, s, axis=0))
    dtype = np.uint16 if t.max() < 2**16 else np.uint32
    seq = np.stack([prompt, response], axis=1).astype(dtype)  # [sequence, role, cell]
    seq_tokens = np.stack([prompt_t, t], axis=1)
    by_language = seq.reshape(k, s, 2, m).sum(axis=1, dtype=np.int64)
    tokens = seq_tokens.reshape(k, s, 2).sum(axis=1)
    languages = [f"l{i}" for i in range(k)]
    ids = np.array([f"item{j:04d}" for j in range(shape.items)])
    lm = (shape.layers, shape.neurons)
    return xr.Dataset(
        {
            "n_active": ((LANGUAGE, ROLE, LAYER, NEURON), by_language.reshape(k, 2, *lm)),
            "n_tokens": ((LANGUAGE, ROLE), tokens.astype(np.int64)),
            "seq_n_active": ((SEQUENCE, ROLE, LAYER, NEURON), seq.reshape(n_seq, 2, *lm)),
            "seq_n_tokens": ((SEQUENCE, ROLE), seq_tokens.astype(np.int64)),
            "seq_language": ((SEQUENCE,), np.repeat(np.array(languages), s)),
            "seq_id": ((SEQUENCE,), np.tile(np.repeat(ids, shape.responses), k)),
        },
        coords={
            LANGUAGE: np.array(languages),
            ROLE: np.array(ROLES),
            LAYER: np.arange(shape.layers, dtype=np.int64),
            NEURON: np.arange(shape.neurons, dtype=np.int64),
        },
    )


def simulate_pair(
    base: Truth, aligned: Truth, rng: np.random.Generator
) -> tuple[xr.Dataset, xr.Dataset]:
    """A base run and an aligned run of the same prompts (same ``seq_id``, same item effects)."""
    items = item_effects(base.shape, rng)
    return simulate(base, rng, items), simulate(aligned, rng, items)


def population(truth: Truth, tokens: int = 10**12) -> xr.Dataset:
    """The population as a run: ``n_active = round(p_true * tokens)`` (no sequences)."""
    shape = truth.shape
    k = shape.languages
    active = np.rint(truth.p_true * tokens).astype(np.int64).reshape(k, shape.layers, -1)
    counts = np.stack([active, active], axis=1)
    languages = np.array([f"l{i}" for i in range(k)])
    return xr.Dataset(
        {
            "n_active": ((LANGUAGE, ROLE, LAYER, NEURON), counts),
            "n_tokens": ((LANGUAGE, ROLE), np.full((k, 2), tokens, dtype=np.int64)),
        },
        coords={
            LANGUAGE: languages,
            ROLE: np.array(ROLES),
            LAYER: np.arange(shape.layers, dtype=np.int64),
            NEURON: np.arange(shape.neurons, dtype=np.int64),
        },
    )


def as_layer_neuron_language(values: NDArray[Any], shape: Shape) -> NDArray[Any]:
    """``[language, cell]`` -> ``[layer, neuron, language]`` (the analysis results' order)."""
    return np.moveaxis(values.reshape(shape.languages, shape.layers, shape.neurons), 0, -1)


def simulate_accuracy(
    rng: np.random.Generator,
    *,
    languages: int,
    items: int,
    controls: int,
    generic: float = 0.0,
    planted: float = 0.0,
) -> tuple[xr.Dataset, NDArray[np.float64]]:
    """Per-item correctness of an accuracy ablation (one panel) with known truth.

    Items are parallel across languages: item i has difficulty z_i ~ N(0.5, 1.5) on the logit
    scale, shared by every language, plus N(0, 0.5) per language, so p_{e,i} = expit(z_i +
    u_{e,i}). The baseline answer is Bernoulli(p). With a set off, every answer is Bernoulli(q)
    drawn afresh: q = expit(logit(p) - generic) for every set (real or control, every
    language: damage that is not language-specific), and for the real set of d on d's own
    items additionally q - planted (floored at 0). Returns the ablation and the true drops
    ``mean_i (p - q)`` of the real sets, ``[deactivated, evaluated]``.
    """
    z = rng.normal(0.5, 1.5, size=items)
    logit = z[None, :] + rng.normal(0, 0.5, size=(languages, items))
    p = 1 / (1 + np.exp(-logit))  # [e, i]
    q = 1 / (1 + np.exp(-(logit - generic)))
    base = rng.random(p.shape) < p
    correct = np.empty((1, languages, controls + 1, languages * items), dtype=bool)
    truth = np.empty((languages, languages))
    for d in range(languages):
        for v in range(controls + 1):
            prob = q.copy()
            if v == 0:
                prob[d] = np.maximum(prob[d] - planted, 0.0)
                truth[d] = (p - prob).mean(axis=1)
            correct[0, d, v] = (rng.random(prob.shape) < prob).ravel()
    names = [f"l{k}" for k in range(languages)]
    ds = xr.Dataset(
        {
            "correct": (("panel", "deactivated", "variant", "item"), correct),
            "baseline_correct": (("item",), base.ravel()),
        },
        coords={
            "panel": ["specific"],
            "deactivated": names,
            "variant": np.arange(controls + 1),
            "item_language": ("item", np.repeat(names, items)),
        },
        attrs={"kind": "accuracy"},
    )
    return ds, truth


# --------------------------------------------------------------------------- ablations
@dataclasses.dataclass(frozen=True)
class AblationShape:
    """A simulated deactivation experiment (the ablation schema of ``langneurons ablate``).

    Items of each language have 20-80 scored tokens and a log-normal difficulty (per-token
    baseline NLL ``base * exp(sd z - sd^2 / 2)``). Switching off any set (a language's or a
    random one) adds ``shift`` per token on every language, item by item scaled by a log-normal
    factor of mean 1 that correlates ``difficulty_share`` with the item's difficulty, plus
    Gaussian noise of sd ``noise * sqrt(tokens)``. A language's own set adds ``planted`` per
    token on its own language only (the alternative; 0: the null).
    """

    languages: int = 4
    items: int = 8  # per language (the built-in evaluation part has 8)
    controls: int = 19
    base: float = 2.0  # mean baseline NLL per token
    sd: float = 0.5  # log-normal sd of item difficulty
    shift: float = 0.05  # damage per token of every set on every language
    damage_sd: float = 0.5  # log-normal sd of an item's damage factor
    difficulty_share: float = 0.5  # correlation of the damage factor with the difficulty
    noise: float = 0.05  # per-item noise sd, times sqrt(tokens)
    planted: float = 0.0  # extra damage per token of a language's own set on its language

    def label(self) -> str:
        """A short description of the cell for tables."""
        parts = [f"K={self.languages}", f"n={self.items}/lang", f"C={self.controls}"]
        if (self.sd, self.damage_sd) != (0.5, 0.5):
            parts.append(f"lognormal sd {self.sd:g}/{self.damage_sd:g}")
        parts.append(f"planted {self.planted:g}" if self.planted else "null")
        return "ablation " + ", ".join(parts)


def _lognormal_mean_one(sd: float, z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.exp(sd * z - sd * sd / 2.0))


def simulate_ablation(shape: AblationShape, rng: np.random.Generator) -> xr.Dataset:
    """One simulated ablation; the true damage is ``shift`` (+ ``planted`` on the diagonal),
    the true dominance ``planted``."""
    k, n, c = shape.languages, shape.items, shape.controls
    langs = [f"l{j}" for j in range(k)]
    tokens = rng.integers(20, 81, size=(k, n)).astype(np.float64)
    z = rng.standard_normal((k, n))
    base = tokens * shape.base * _lognormal_mean_one(shape.sd, z)  # summed NLL, nothing off
    rho = shape.difficulty_share

    def switched_off(extra: NDArray[np.float64]) -> NDArray[np.float64]:
        """Summed NLL of every item with one set off; ``extra[e]`` per token on language e."""
        own = rng.standard_normal((k, n))
        factor = _lognormal_mean_one(shape.damage_sd, rho * z + np.sqrt(1 - rho * rho) * own)
        damage = tokens * (shape.shift + extra[:, None]) * factor
        noise = shape.noise * np.sqrt(tokens) * rng.standard_normal((k, n))
        return np.asarray(base + damage + noise)

    rows = [base]
    controls = [np.full((k, n, c), np.nan)]
    for d in range(k):
        extra = np.zeros(k)
        extra[d] = shape.planted
        rows.append(switched_off(extra))
        controls.append(np.stack([switched_off(np.zeros(k)) for _ in range(c)], axis=-1))
    item_nll = np.stack(rows).reshape(k + 1, k * n)
    control_item = np.stack(controls).reshape(k + 1, k * n, c)
    total = tokens.sum(axis=1)  # [language]
    nll = item_nll.reshape(k + 1, k, n).sum(axis=2) / total
    control_nll = control_item.reshape(k + 1, k, n, c).sum(axis=2) / total[None, :, None]
    return xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll),
            "ppl": (("deactivated", "evaluated"), np.exp(nll)),
            "control_nll": (("deactivated", "evaluated", "control"), control_nll),
            "n_neurons": (("deactivated",), np.array([0] + [50] * k)),
            "item_nll": (("deactivated", "item"), item_nll),
            "control_item_nll": (("deactivated", "item", "control"), control_item),
            "item_tokens": (("item",), tokens.reshape(-1).astype(np.int64)),
        },
        coords={
            "deactivated": ["none", *langs],
            "evaluated": langs,
            "control": np.arange(c),
            "item_language": ("item", np.repeat(langs, n)),
            "item_id": ("item", np.tile([f"q{i}" for i in range(n)], k)),
        },
        attrs={"result_name": "simulated", "heldout": "disjoint", "heldout_note": "simulated"},
    )
