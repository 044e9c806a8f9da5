"""The fixes of a finished audit's vectors (`audit.mitigate`): what a mitigation run computes
(`MitigateConfig`), each fix's transform, calibrated only on data that is not JBB and saved
once under `RUN/mitigations/`, and their settings (`audit.settings` builds ⊥1 and ⊥k exactly
as the grid does):
  perp1 / perpk  orthogonalised at the steering layer (against the direction / the subspace);
  compensate     downstream compensation on held-out harmful prompts (`harmful_val`);
  gate           CAST's condition gate, its point chosen on the refusal train prompts;
  learned        the vector less a learned safety component (`methods.learned`);
  clamp1 / clampk  +v deployed with its refusal-direction (subspace) component held at an
                 unsteered twin's at `clamp_layers` (`core.patching.TwinClamp`: the first-token
                 mediation's patch as a fix; no vector, twice the rows per decode step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from steerlens.audit.artefacts import Refusal
from steerlens.audit.config import AuditConfig
from steerlens.audit.flags import opt
from steerlens.audit.log import log as _log
from steerlens.audit.options import normalise_fields
from steerlens.audit.settings import FIX_KINDS, Frame, Kind, Setting, dosed, fix_setting, vector_setting
from steerlens.audit.stages import instructions
from steerlens.core.geometry import unit
from steerlens.core.patching import TwinClamp
from steerlens.core.steering import Steering, addition, as_float, combine
from steerlens.core.tensorfile import load_tensors, save_tensors
from steerlens.datasets.behaviours import behaviour_split
from steerlens.errors import SteerlensError
from steerlens.methods.learned import FORMS, STOPS, Schedule, learned_component
from steerlens.methods.mitigations import Condition, compensation, find_condition_point, gated
from steerlens.rundir import RunStore
from steerlens.schema import CONDITION_TENSORS, compensation_file, learned_file

MITIGATIONS = tuple(FIX_KINDS)
CLAMPS = ("clamp1", "clampk")  # the direction (1-D), the subspace (k-D)
# the default: every fix but the clamps, which decode each row beside an unsteered twin (twice
# the rows per step); named with --mitigations, they run and are costed like the others
DEFAULT_MITIGATIONS = tuple(m for m in MITIGATIONS if m not in CLAMPS)


@dataclass(frozen=True)
class MitigateConfig:
    """What the mitigate stage computes (its hash guards a resumed run)."""

    mitigations: tuple[str, ...] = opt(DEFAULT_MITIGATIONS, f"some of {', '.join(MITIGATIONS)} "
                                       "(default: all but clamp1 and clampk, which decode each "
                                       "row beside an unsteered twin: twice the rows per step)",
                                       nargs="+")
    n_capability: int = opt(100, "MMLU and TruthfulQA items each (both answer orders)", type=int)
    n_calibration: int = opt(32, "held-out harmful prompts (harmful_val) that calibrate the "
                             "compensation", type=int)
    learned_steps: int = opt(150, "most optimisation steps of the learned safety component "
                             "(with --learned-stop steps: exactly this many)", type=int)
    learned_harmful: int = opt(32, "harmful train prompts in the learned component's objective",
                               type=int)
    learned_items: int = opt(16, "training A/B items of the behaviour (both orders) the learned "
                             "component keeps", type=int)
    learned_lr: float = opt(0.05, "learning rate of the learned component", type=float)
    # The learned component's form and stopping rule (methods.learned). The first runs' values
    # (penalty, steps; `LEARNED_LEGACY`) and what they do not read are left out of config.json,
    # so those runs' settings are `--learned-form penalty --learned-stop steps --learned-steps
    # 10 --learned-harmful 8 --learned-items 4`.
    learned_form: str = opt("constrained", "the learned component's objective: constrained "
                            "(min refusal drift s.t. behaviour kept >= --learned-keep, augmented "
                            "Lagrangian; arXiv:2608.08383's form) or penalty (drift + (1 - kept)^2)",
                            choices=FORMS)
    learned_stop: str = opt("validation", "when the learned component stops: validation (best "
                            "validation loss improved by < --learned-tol over --learned-window "
                            "steps, or --learned-steps; the best validation step is kept) or "
                            "steps (exactly --learned-steps; lowest training loss)", choices=STOPS)
    learned_val_harmful: int = opt(32, "held-out harmful train prompts that validate the learned "
                                   "component (disjoint from its training prompts)", type=int)
    learned_val_items: int = opt(16, "held-out A/B items of the behaviour (both orders) that "
                                 "validate the learned component", type=int)
    learned_keep: float = opt(0.9, "the constrained form's bar: the behaviour effect kept on the "
                              "training items, at least", type=float)
    learned_window: int = opt(10, "steps over which the validation loss must improve", type=int)
    learned_tol: float = opt(0.01, "relative improvement of the best validation loss over the "
                             "window below which training stops", type=float)
    clamp_layers: tuple[int, ...] = opt((), "layers (resid_pre) where clamp1/clampk hold the "
                                        "refusal component at the unsteered twin's (default: "
                                        "every layer from the steering layer on)", nargs="+",
                                        type=int)
    n_timing: int = opt(8, "goals (first attack) on which each clamp's decode is timed against "
                        "the plain +v's, each alone (0: no timing)", type=int)
    seed: int = opt(0, "seed of the capability items' sample", type=int)
    attacks: tuple[str, ...] = opt((), "only these of the run's attacks (default: all of them)",
                                   nargs="+")
    vectors: tuple[str, ...] = opt((), "only these of the run's vectors, e.g. those that lower "
                                   "refusal (default: all)", nargs="+")

    def __post_init__(self) -> None:
        normalise_fields(self)  # every value by the rule of audit.options (no list read as chars)

    def to_json(self) -> dict:
        """The fields that change what is computed (`LEARNED_LEGACY`, `unread_learned`; the
        clamps' own only when a clamp runs, so a run made before the clamps keeps its settings)."""
        skip = unread_learned(self.learned_form, self.learned_stop)
        if not set(CLAMPS) & set(self.mitigations):
            skip |= {"clamp_layers", "n_timing"}
        return {k: v for k, v in asdict(self).items() if k not in skip
                and not (k in LEARNED_LEGACY and v == LEARNED_LEGACY[k])}

    def schedule(self) -> Schedule:
        """The learned component's optimisation (`methods.learned.Schedule`)."""
        return Schedule(form=self.learned_form, stop=self.learned_stop, max_steps=self.learned_steps,
                        lr=self.learned_lr, window=self.learned_window, tol=self.learned_tol,
                        keep=self.learned_keep)


LEARNED_LEGACY = {"learned_form": "penalty", "learned_stop": "steps"}


def unread_learned(form: str, stop: str) -> set[str]:
    """The learned options this form and stopping rule do not read."""
    out = set() if form == "constrained" else {"learned_keep"}
    if stop != "validation":
        out |= {"learned_val_harmful", "learned_val_items", "learned_window", "learned_tol"}
    return out


def _save_condition(c: Condition, path) -> None:
    meta = {"layer": c.layer, "threshold": c.threshold, "comparator": c.comparator, "f1": c.f1}
    save_tensors(path, {"direction": c.direction}, meta)


def _load_condition(path) -> Condition:
    t, meta = load_tensors(path)
    return Condition(t["direction"], meta["layer"], meta["threshold"], meta["comparator"], meta["f1"])


def condition(store: RunStore, model, cfg: AuditConfig, ref: Refusal) -> Condition:
    """CAST's condition point on the refusal train prompts (never JBB), saved once."""
    def compute() -> Condition:
        n = cfg.n_refusal_train
        return find_condition_point(model, instructions("harmful_train", n, cfg.seed),
                                    instructions("harmless_train", n, cfg.seed),
                                    range(1, ref.layer + 1), system=cfg.system,
                                    batch_size=cfg.batch_size)

    return store.cached(CONDITION_TENSORS, compute, _save_condition, _load_condition)


def compensated(store: RunStore, model, cfg: AuditConfig, mcfg: MitigateConfig, ref: Refusal,
                tag: str, v: torch.Tensor) -> Steering:
    """Downstream compensation of `v`, its per-layer multipliers saved (`compensation/`)."""
    rd, L = ref.direction, ref.layer
    later = [k for k in rd.layers if k > L]
    add = addition(v.float().to(model.cfg.device), L)

    def compute() -> dict:
        calib = instructions("harmful_val", mcfg.n_calibration, cfg.seed + 1)
        s = compensation(model, add, {k: rd.at(k) for k in later}, later, calib, cfg.system,
                         cfg.batch_size)
        return {"layers": later, "multipliers": [float(a.multiplier) for a in s.interventions[1:]],
                "n_calibration": len(calib)}

    rec = store.cached_json(compensation_file(tag), compute)
    return combine(add, *[addition(as_float(unit(rd.at(k)), model), k, m)
                          for k, m in zip(rec["layers"], rec["multipliers"])])


def learned(store: RunStore, model, cfg: AuditConfig, mcfg: MitigateConfig, ref: Refusal,
            name: str, sv, tag: str, v: torch.Tensor) -> torch.Tensor:
    """`v` less its learned safety component (`learned/{tag}.safetensors`, curve in its meta)."""
    def compute():
        harmful, items, val_harmful, val_items = learned_sets(cfg, mcfg, sv.meta.get("behaviour", name))
        sched = mcfg.schedule()
        _log(f"learned safety component: {tag} ({sched.form}, stop: {sched.stop}, "
             f"at most {sched.max_steps} steps)")
        return learned_component(model, v, ref.layer, harmful, items, unit(ref.direction.at(ref.layer)),
                                 sched, val_harmful, val_items, system=cfg.system)

    def save(comp, path) -> None:
        meta = {"curve": comp.curve, "best_step": comp.best_step}
        if mcfg.learned_stop != "steps" or mcfg.learned_form != "penalty":
            meta.update(stopped=comp.stopped, schedule=asdict(mcfg.schedule()))
        save_tensors(path, {"direction": comp.direction}, meta)

    u = store.cached(learned_file(tag), compute, save, lambda p: load_tensors(p)[0]["direction"]).to(v)
    return v - (v @ u) * u


def clamp_layers(layers: tuple[int, ...], steering_layer: int, n_layers: int) -> list[int]:
    """The clamp's layers: those given, else every layer from the steering layer on (below
    it the steered rows equal their twins: nothing to hold)."""
    L = steering_layer
    got = sorted(set(layers)) if layers else list(range(L, n_layers))
    if not got or got[0] < L or got[-1] >= n_layers:
        raise SteerlensError(f"--clamp-layers {list(layers)}: the clamp holds the component "
                             f"from the steering layer {L} on, below {n_layers}",
                             fix=f"give layers in {L}..{n_layers - 1}, or none for all of them")
    return got


def clamp(ref: Refusal, sub, fix: str, steering: Steering, layers: list[int]) -> TwinClamp:
    """`steering` with its component along the refusal direction (clamp1; per layer, the
    deepest computed direction at or below it) or in the refusal subspace (clampk: that
    direction and the subspace's other rows) held at the unsteered twin's at `layers`: the
    bases of the first-token mediation (`audit.mediation.bases`)."""
    from steerlens.methods.mediation import per_layer_bases

    dirs = {lay: ref.direction.at(lay) for lay in ref.direction.layers}
    k = sub.evidence["k"]
    extra = sub.basis[1:k] if fix == "clampk" and k > 1 else None
    return TwinClamp(steering, layers, per_layer_bases(dirs, layers, extra))


def distinct_clamps(k: int) -> tuple[str, ...]:
    """The clamps that differ for a subspace of `k` rows: with k = 1 clampk holds the same
    single direction as clamp1, so decoding it again would only repeat clamp1's cell."""
    return CLAMPS if k > 1 else ("clamp1",)


def fixes_to_decode(mitigations: tuple[str, ...], k: int) -> list[str]:
    """The chosen fixes less a k = 1 clampk beside clamp1: the same hold, decoded once
    (`results.mitigations.one_row_duplicates` reads it as clamp1's)."""
    return [m for m in mitigations
            if not (m == "clampk" and "clamp1" in mitigations and "clampk" not in distinct_clamps(k))]


def clamp_settings(model, cfg: AuditConfig, ref: Refusal, sub, vectors, scale: float,
                   layers: list[int]) -> list[Setting]:
    """clamp1 and (when the subspace has more than one row) clampk of every CAA vector's +v
    at every audited dose (the generated mediation's cells; `mitigation_settings` builds the
    same ones)."""
    frame = Frame.of(model, ref, sub)
    out = []
    for d in cfg.doses:
        for name, sv in vectors.vectors.items():
            v = dosed(sv.at(ref.layer), d, scale)
            out += [fix_setting(frame, name, d, f, v, clamp(ref, sub, f, frame.add(v), layers))
                    for f in distinct_clamps(sub.evidence["k"])]
    return out


def learned_sets(cfg: AuditConfig, mcfg: MitigateConfig, behaviour: str) -> tuple[list, list, list, list]:
    """The learned component's harmful prompts (`harmful_train`, never JBB) and A/B items (the
    behaviour's generate split, never its test items), for training and, disjoint from them,
    validation; the first runs' sets under `--learned-stop steps`."""
    gen = behaviour_split(behaviour, "generate")
    n, ni = mcfg.learned_harmful, mcfg.learned_items
    if mcfg.learned_stop == "steps":
        return instructions("harmful_train", n, cfg.seed + 2), gen[-ni:], [], []
    m, mi = mcfg.learned_val_harmful, mcfg.learned_val_items
    harmful = instructions("harmful_train", n + m, cfg.seed + 2)
    if len(harmful) < n + m or len(gen) < ni + mi:
        raise SteerlensError(f"the learned component needs {n} + {m} harmful prompts and {ni} + {mi} "
                             f"items; there are {len(harmful)} and {len(gen)} ({behaviour})",
                             fix="lower --learned-harmful/--learned-val-harmful or "
                                 "--learned-items/--learned-val-items")
    return harmful[:n], gen[-ni:], harmful[n:], gen[-(ni + mi):-ni]


def has_behaviour(sv) -> bool:
    """A vector of a CAA behaviour (its held-out items measure what a fix keeps)."""
    return sv.meta.get("kind") == "caa" or bool(sv.meta.get("method"))


@dataclass
class _Fixes:
    """What every fix of one run needs."""

    store: RunStore
    model: object
    cfg: AuditConfig
    mcfg: MitigateConfig
    ref: Refusal
    frame: Frame
    sub: object = None
    cond: Condition | None = None

    def steering(self, fix: str, name: str, sv, tag: str, v: torch.Tensor):
        """A fix's steering (None for ⊥1 and ⊥k, which `settings.fix_setting` builds)."""
        if fix in CLAMPS:
            layers = clamp_layers(self.mcfg.clamp_layers, self.ref.layer, self.model.cfg.n_layers)
            return clamp(self.ref, self.sub, fix, self.frame.add(v), layers)
        if fix == "compensate":
            return compensated(self.store, self.model, self.cfg, self.mcfg, self.ref, tag, v)
        if fix == "gate":
            return gated(self.frame.add(v), self.cond)
        if fix == "learned":
            return self.frame.add(learned(self.store, self.model, self.cfg, self.mcfg, self.ref,
                                          name, sv, tag, v))
        return None


def mitigation_settings(store: RunStore, model, cfg: AuditConfig, mcfg: MitigateConfig,
                        ref: Refusal, sub, vectors, scale: float) -> list[Setting]:
    """Per vector and audited dose the raw +v and each chosen fix (the run may hold some of
    their cells already: perp1 and perpk in the standard presets)."""
    c = _Fixes(store, model, cfg, mcfg, ref, Frame.of(model, ref, sub), sub)
    if "gate" in mcfg.mitigations:
        c.cond = condition(store, model, cfg, ref)
    out = []
    for d in cfg.doses:
        for name, sv in vectors.vectors.items():
            tag, v = f"{name}@{d:g}", dosed(sv.at(ref.layer), d, scale)
            out.append(vector_setting(c.frame, name, d, Kind.PLUS, v))
            for m in fixes_to_decode(mcfg.mitigations, sub.evidence["k"]):
                if m == "learned" and not has_behaviour(sv):
                    continue  # no behaviour items to keep the effect on (a --vector file)
                out.append(fix_setting(c.frame, name, d, m, v, c.steering(m, name, sv, tag, v)))
    return out
