"""Two mitigations for unsafe steering vectors: downstream compensation and conditional steering.

**Downstream compensation** (`compensation`) tests the mediation reading of Arditi et al. (2024,
"Refusal in Language Models Is Mediated by a Single Direction"): if a vector lowers refusal
*through* the refusal direction, its effect runs through the projection of the later layers'
residual stream onto their refusal directions. The compensated steering adds the vector and, at
each later layer L, `-shift_L * r_L` (r_L unit), where `shift_L` is the mean change the steering
causes in that projection on held-out harmful training prompts, at the steered positions (the
tail after the user's message). Layers are calibrated in order, each with the corrections before
it in place, since an earlier correction changes the later shifts. If the compensated vector
still lowers refusal, its effect does not run (only) through the mean projection.

**Conditional steering** (CAST: Lee et al. 2024, "Programming Refusal with Conditional
Activation Steering", and IBM's activation-steering, github.com/IBM/activation-steering,
`MalleableModel.find_best_condition_point` and `LeashLayer`): a condition direction c at a
condition layer reads each prompt; the similarity is IBM's `cos(h, tanh(P h))`, with h the
prompt's mean `resid_pre` there and `P = c c^T / c^T c`; a threshold and comparator chosen by F1
on training prompts say "harmful". `gated` steers only the rows the condition calls benign
(CAST's rule "if not C then B"): the vector's help on benign prompts is kept, and harmful
prompts are left exactly as unsteered.

Where this follows IBM and where it departs (all deliberate):
- The condition point search is IBM's: every layer, every threshold (default IBM's
  `np.arange(0, 1, 0.01)`), both comparators in IBM's naming ("larger": the threshold is larger,
  met when similarity < threshold; "smaller": met when similarity > threshold), F1 with harmful
  as the positive class, the first strictly best kept. Only single layers are searched (IBM's
  default `max_layers_to_combine=1`); the threshold is not rounded to 3 decimals.
- The direction is the difference in means (IBM's `method="mean_diff"`, unit); CAST's demos use
  PCA. It is read where the condition is checked, `resid_pre` of the layer (IBM reads training
  states at the layer's output, `hidden_states[layer + 1]`, and checks its input).
- h is the mean over the prompt's tokens *before* the steered tail (shared prefix and user's
  message), padding excluded. IBM averages every token of the chat text, the assistant header
  included, and its training states include padding. Leaving out the tail keeps the decision
  independent of the steering and of any attack's assistant prefill.
- The decision is per row, in the forward pass. IBM reads batch row 0 only (`hidden_states[0]`)
  and keeps one global `condition_met`. Here every row of a left-padded batch gets its own
  decision, and each row's prefix, padding and body are tracked as the cache grows (below).
- Only after-instruction additions can be gated, with the condition layer at or before them,
  and at least 1 (IBM's default search also starts at 1): a shared prefix cannot be steered row
  by row, and a single pass must decide before it steers.

How they would enter the audit (not wired in): in `audit.settings.build_settings`, per vector and
dose, `Setting(f"{tag}+v_comp", Kind.COMPENSATED, compensation(model, add(v), {k: rd.at(k) for k in
later}, later, ref.val_harmful), name, d)`, with `later = [k for k in rd.layers if k > L]`, and
`Setting(f"{tag}+v_gated", Kind.GATED, gated(add(v), cond), name, d)`, with `cond =
find_condition_point(model, harmful_train, harmless_train, range(1, L + 1))` computed once in a
stage of its own. Gated settings touch the prompt (own caches, never stacked), and
`gate_decisions` on each attack's JBB harmful and benign goals would be the gate's firing rates.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from einops import einsum
from jaxtyping import Bool, Float
from torch import Tensor

from steerlens.core.activations import collect_resid
from steerlens.core.geometry import check_vector, cosine, mean_difference, scalar_projection, unit
from steerlens.core.hooks import check_layers, hook_name, stop_layer
from steerlens.core.kvcache import build_prefix_cache, fold_prefix
from steerlens.core.prompts import PromptSet, chat_prompts, left_pad, pad_id
from steerlens.core.steering import ActivationAddition, Steering, addition, as_float, combine
from steerlens.errors import SteerlensError

COMPARATORS: tuple[str, ...] = ("larger", "smaller")  # IBM's order and naming
IBM_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(100))  # np.arange(0, 1, 0.01)


# ---------------------------------------------------------------------------------------------
# Downstream compensation


def _additions(steering: Steering, what: str) -> list[ActivationAddition]:
    """The steering's interventions, which must all be after-instruction additions."""
    adds = list(steering.interventions)
    if not adds or not all(isinstance(i, ActivationAddition) and i.positions == "after_instruction"
                           for i in adds):
        raise SteerlensError(f"{what} needs a steering made of after-instruction additions",
                             fix="build it with steering.addition(v, layer) (the audit's kind)")
    return adds


def _check_held_out(prompts: Sequence[str]) -> None:
    """Refuse JBB goals as calibration prompts: JBB is the evaluation set."""
    from steerlens.datasets.loaders import load_jbb

    goals = {b.goal.strip().casefold() for split in ("harmful", "benign") for b in load_jbb(split)}
    leaked = [p for p in prompts if p.strip().casefold() in goals]
    if leaked:
        raise SteerlensError(f"{len(leaked)} calibration prompt(s) are JBB goals, e.g. {leaked[0]!r}",
                             fix="calibrate on held-out harmful training prompts (harmful_val)")


def tail_mean(model, prompts: PromptSet, layers: Sequence[int], steering: Steering | None = None,
              batch_size: int = 16) -> Float[Tensor, "layer d_model"]:
    """Mean `resid_pre` over prompts and tail positions (where the steering acts), float64."""
    acts = collect_resid(model, prompts, layers, prompts.tail_positions(), batch_size=batch_size,
                         steering=steering, desc=None)
    return acts.double().mean(dim=(0, 2))


def projection_shift(model, prompts: PromptSet, steering: Steering, layer: int,
                     direction: Float[Tensor, "d_model"], batch_size: int = 16) -> float:
    """Mean change `steering` causes in the tail's projection onto unit(direction) at `layer`."""
    base, steered = (tail_mean(model, prompts, [layer], s, batch_size)[0]
                     for s in (Steering(), steering))
    return float(scalar_projection(steered - base, direction.to(base.device)))


def compensation(model, steering: Steering, refusal_dirs: dict[int, Tensor], layers: list[int],
                 calib_prompts: list[str], system: str | None = None,
                 batch_size: int = 16) -> Steering:
    """`steering` plus, at each later layer L, `-shift_L * unit(r_L)` cancelling the mean shift
    of the refusal projection on `calib_prompts`, calibrated layer by layer (module docstring)."""
    adds = _additions(steering, "compensation")
    layers = check_layers(model, layers)
    if min(layers) <= max(a.layer for a in adds):
        raise SteerlensError(f"compensation layers {layers} must come after the steering layer",
                             fix="pass layers later than every addition's layer")
    missing = [k for k in layers if k not in refusal_dirs]
    if missing:
        raise SteerlensError(f"no refusal direction for layer(s) {missing}",
                             fix="pass refusal_dirs={L: RefusalDirection.at(L)} for every layer")
    _check_held_out(calib_prompts)
    prompts = chat_prompts(model.tokenizer, list(calib_prompts), system)
    base = tail_mean(model, prompts, layers, Steering(), batch_size)
    out = steering
    for i, layer in enumerate(layers):
        r = unit(refusal_dirs[layer]).to(base.device)
        steered = tail_mean(model, prompts, [layer], out, batch_size)[0]
        shift = float(scalar_projection(steered - base[i], r))
        out = combine(out, addition(as_float(r, model), layer, -shift))
    return out


# ---------------------------------------------------------------------------------------------
# Conditional steering (CAST)


def cast_similarity(h: Float[Tensor, "... d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "..."]:
    """IBM's condition similarity `cos(h, tanh(P h))`, P the projector onto `direction` (float64)."""
    r = unit(direction).to(h.device)
    return cosine(h, torch.tanh(scalar_projection(h, r)[..., None] * r))


def condition_met(similarity: Tensor, threshold: float, comparator: str) -> Bool[Tensor, "..."]:
    """IBM's comparison: "smaller" (the threshold is smaller) is met when similarity > threshold,
    "larger" when similarity < threshold."""
    if comparator not in COMPARATORS:
        raise SteerlensError(f"unknown comparator {comparator!r}", fix=f"use one of {COMPARATORS}")
    return similarity > threshold if comparator == "smaller" else similarity < threshold


def f1_score(truth: Bool[Tensor, "n"], pred: Bool[Tensor, "n"]) -> float:
    """Binary F1 of the positive class (0 when nothing is predicted positive, as sklearn's)."""
    tp = int((truth & pred).sum())
    wrong = int((truth ^ pred).sum())
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


@dataclass(frozen=True, eq=False)
class Condition:
    """A CAST condition point: the unit direction at `layer`, and the threshold and comparator
    under which a prompt counts as harmful (the condition is met)."""

    direction: Float[Tensor, "d_model"]
    layer: int
    threshold: float
    comparator: str
    f1: float = float("nan")  # on the prompts it was chosen on

    def __post_init__(self) -> None:
        check_vector(self.direction, name="condition direction")
        condition_met(torch.zeros(1), self.threshold, self.comparator)  # validates the comparator
        object.__setattr__(self, "direction", unit(self.direction).float())

    def similarity(self, means: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        return cast_similarity(means, self.direction)

    def met(self, means: Float[Tensor, "... d_model"]) -> Bool[Tensor, "..."]:
        """True where the prompt (its mean `resid_pre` at `layer`) reads as harmful."""
        return condition_met(self.similarity(means), self.threshold, self.comparator)


def _prefix_sums(model, prefix: list[int], layers: list[int], stop: int | None):
    """Run the shared prefix once: its KV cache and its `resid_pre` sums at `layers`."""
    sums = torch.zeros(len(layers), model.cfg.d_model, device=model.cfg.device)

    def grab(x: Tensor, hook, i: int) -> Tensor:
        sums[i] = x[0].float().sum(0)
        return x

    hooks = [(hook_name(lay), functools.partial(grab, i=i)) for i, lay in enumerate(layers)]
    return build_prefix_cache(model, prefix, stop, hooks), sums


@torch.no_grad()
def prompt_means(model, prompts: PromptSet, layers: Sequence[int],
                 batch_size: int = 16) -> Float[Tensor, "batch layer d_model"]:
    """Each prompt's mean `resid_pre` at `layers` over its tokens before the tail (shared prefix
    and user's message, padding excluded): CAST's "mean" summary. Float32, prompt order."""
    layers = check_layers(model, layers)
    prompts = fold_prefix(model, prompts)
    stop = stop_layer(model, layers)
    prefix, pre_sums = _prefix_sums(model, prompts.prefix, layers, stop)
    device, bodies = model.cfg.device, prompts.bodies
    out = torch.empty(len(prompts), len(layers), model.cfg.d_model, device=device)
    for start in range(0, len(prompts), batch_size):
        idx = list(range(start, min(start + batch_size, len(prompts))))
        ids, mask = left_pad([bodies[i] for i in idx], pad_id(model.tokenizer))
        mask = mask.to(device)
        got: dict[int, Tensor] = {}

        def grab(x: Tensor, hook, i: int) -> Tensor:
            got[i] = x.float()
            return x

        hooks = [(hook_name(lay), functools.partial(grab, i=i)) for i, lay in enumerate(layers)]
        model.run_with_hooks(ids.to(device), fwd_hooks=hooks, attention_mask=prefix.full_mask(mask),
                             past_key_values=prefix.fork(model, len(idx)), return_type=None,
                             stop_at_layer=stop, logits_to_keep=1)
        for i in range(len(layers)):
            body = einsum(got[i], mask.float(), "b p d, b p -> b d")
            out[idx, i] = (pre_sums[i] + body) / (len(prefix) + mask.sum(1, keepdim=True))
    return out


def _as_prompts(model, prompts: Sequence[str] | PromptSet, system: str | None) -> PromptSet:
    return prompts if isinstance(prompts, PromptSet) else chat_prompts(model.tokenizer, list(prompts),
                                                                       system)


def _directions(harmful: Tensor, harmless: Tensor, layers: list[int]) -> dict[int, Tensor]:
    diff = mean_difference(harmful, harmless)
    return {lay: unit(diff[i]).float() for i, lay in enumerate(layers)}


def best_condition_point(similarity: dict[int, Tensor], harmful: Bool[Tensor, "n"],
                         thresholds: Sequence[float], comparators: Sequence[str]
                         ) -> tuple[int, float, str, float]:
    """IBM's grid search: (layer, threshold, comparator, F1), the first strictly best by F1."""
    best, best_f1 = None, 0.0
    for layer, sims in similarity.items():
        for t in thresholds:
            for c in comparators:
                f1 = f1_score(harmful, condition_met(sims, float(t), c).cpu())
                if f1 > best_f1:
                    best, best_f1 = (layer, float(t), c), f1
    if best is None:
        raise SteerlensError("no condition point separates the prompts (every F1 is 0)",
                             fix="widen the thresholds (similarities lie in [-1, 1]) or the layers")
    return (*best, best_f1)


@torch.no_grad()
def find_condition_point(model, harmful: Sequence[str] | PromptSet, harmless: Sequence[str] | PromptSet,
                         layers: Sequence[int], thresholds: Sequence[float] | None = None,
                         comparators: Sequence[str] = COMPARATORS,
                         directions: dict[int, Tensor] | None = None, system: str | None = None,
                         batch_size: int = 16) -> Condition:
    """Choose the condition layer, threshold and comparator by F1 on (training) prompts, as IBM's
    `find_best_condition_point`; the directions are fit on the same prompts unless given."""
    layers = check_layers(model, layers)
    if layers[0] < 1:
        raise SteerlensError("the condition layer must be 1 or later", fix="search layers from 1 on")
    mh, ml = (prompt_means(model, _as_prompts(model, p, system), layers, batch_size)
              for p in (harmful, harmless))
    dirs = directions if directions is not None else _directions(mh, ml, layers)
    sims = {lay: cast_similarity(torch.cat([mh[:, i], ml[:, i]]), dirs[lay])
            for i, lay in enumerate(layers)}
    truth = torch.tensor([True] * len(mh) + [False] * len(ml))
    layer, t, c, f1 = best_condition_point(
        sims, truth, IBM_THRESHOLDS if thresholds is None else thresholds, comparators)
    return Condition(dirs[layer], layer, t, c, f1)


@torch.no_grad()
def gate_decisions(model, prompts: Sequence[str] | PromptSet, condition: Condition,
                   system: str | None = None, batch_size: int = 16) -> list[bool]:
    """Per prompt, whether the gate lets the steering through (the condition reads it benign)."""
    means = prompt_means(model, _as_prompts(model, prompts, system), [condition.layer], batch_size)
    return (~condition.met(means[:, 0])).tolist()


@dataclass
class _Segment:
    """Positions [start, end) of the KV cache that one call wrote, with the per-row sums and
    counts of its non-padding, pre-tail `resid_pre` at the condition layer (rows: 1 or batch)."""

    start: int
    end: int
    total: Float[Tensor, "rows d_model"]
    count: Float[Tensor, "rows"]


@dataclass
class _GateState:
    segments: list[_Segment] = field(default_factory=list)
    steer: Bool[Tensor, "batch"] | None = None  # rows the steering acts on
    similarity: Float[Tensor, "batch"] | None = None
    call: dict = field(default_factory=dict)  # this call's past length and real key positions


class GatedSteering:
    """`steering` applied only to rows whose condition reads benign, decided per row in each
    forward pass that runs the prompt: the prefix call, the bodies, or whole rows.

    The condition layer's hook records each call's pre-tail positions (block 0's attention
    scores, `blocks.0.attn.hook_attn_scores` with masked keys at the dtype's minimum, give the
    cache length before the call and which keys are padding); a call starting
    at cache position p drops what was recorded from p on (another batch's bodies) and keeps
    the shared prefix. Decode steps (`tail=None`) reuse the decision; `keep` follows the rows.
    """

    stackable = False
    # It changes no prompt activation, but must read them under its own hooks: a body cache
    # shared with other settings would hide the prompt from the gate.
    touches_prompt = True
    apply = Steering.apply

    def __init__(self, steering: Steering, condition: Condition):
        first = min(a.layer for a in _additions(steering, "a gate"))
        if not 1 <= condition.layer <= first:
            raise SteerlensError(f"condition layer {condition.layer} must be in 1..{first}",
                                 fix="search condition layers from 1 to the steering layer")
        self.steering, self.condition, self.state = steering, condition, _GateState()

    @property
    def interventions(self) -> tuple:
        return self.steering.interventions

    def hooks(self, tail: int | None = None) -> list[tuple[str, object]]:
        read = [] if tail is None else [
            ("blocks.0.attn.hook_attn_scores", self._read_keys),
            (hook_name(self.condition.layer), functools.partial(self._read_prompt, n=tail))]
        return read + [(hook_name(a.layer, a.site),
                        functools.partial(self._add, delta=a.multiplier * a.vector, n=tail))
                       for a in self.steering.interventions]

    def keep(self, index: Tensor) -> None:
        if self.state.steer is not None:
            self.state.steer = self.state.steer[index.to(self.state.steer.device)]

    def _read_keys(self, scores: Tensor, hook) -> Tensor:
        """The last query sees every key but the masked ones (padding): mask value = dtype min."""
        last = scores[:, 0, -1]
        past = last.shape[-1] - scores.shape[-2]
        real = last[:, past:] > torch.finfo(scores.dtype).min / 2
        self.state.call = {"past": past, "real": real}
        return scores

    def _read_prompt(self, x: Tensor, hook, n: int) -> Tensor:
        call, body = self.state.call, x.shape[1] - n
        if not call:
            raise SteerlensError("the gate did not see block 0's attention scores in this call",
                                 fix="use a model whose bridge fires blocks.0.attn.hook_attn_scores")
        self.state.call = {}
        real = call["real"][:, :body].float()
        seg = _Segment(call["past"], call["past"] + x.shape[1],
                       einsum(x[:, :body].float(), real, "b p d, b p -> b d"), real.sum(1))
        self.state.segments = [s for s in self.state.segments if s.end <= seg.start] + [seg]
        self._decide(x.shape[0])
        return x

    def _decide(self, batch: int) -> None:
        segs = self.state.segments
        if segs[0].start != 0 or any(a.end != b.start for a, b in zip(segs, segs[1:])) or any(
                s.total.shape[0] not in (1, batch) for s in segs):
            raise SteerlensError("the gate has not seen the whole prompt of this batch",
                                 fix="run prefix and prompts under the gated steering's own hooks")
        total = sum(s.total for s in segs)
        count = sum(s.count for s in segs)
        mean = total / count[:, None]
        self.state.similarity = self.condition.similarity(mean).expand(batch)
        self.state.steer = ~condition_met(self.state.similarity, self.condition.threshold,
                                          self.condition.comparator)

    def _add(self, x: Tensor, hook, delta: Tensor, n: int | None) -> Tensor:
        if n == 0:
            return x
        steer = self.state.steer
        if steer is None or steer.shape[0] != x.shape[0]:
            raise SteerlensError("the gate has no decision for this batch",
                                 fix="run the prompts under the gated steering before decoding")
        rows = steer.to(x.device).nonzero()[:, 0]
        if not len(rows):
            return x
        x = x.clone()
        d = delta.to(device=x.device, dtype=x.dtype)
        if n is None:
            x[rows] += d
        else:
            x[rows, -n:] += d
        return x


def gated(steering: Steering, condition: Condition) -> GatedSteering:
    """CAST's conditional steering: `steering` only on the rows `condition` reads as benign."""
    return GatedSteering(steering, condition)

