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

import sys
from dataclasses import asdict, dataclass

import torch

from steerlens.audit.artefacts import Refusal
from steerlens.audit.config import AuditConfig
from steerlens.audit.flags import opt
from steerlens.audit.options import normalise_fields
from steerlens.audit.settings import FIX_KINDS, Frame, Kind, Setting, dosed, fix_setting, vector_setting
from steerlens.audit.stages import instructions
from steerlens.core.geometry import unit
from steerlens.core.patching import TwinClamp
from steerlens.core.steering import Steering, addition, as_float, combine
from steerlens.core.tensorfile import load_tensors, save_tensors
from steerlens.datasets.behaviours import behaviour_split
from steerlens.errors import SteerlensError
from steerlens.methods.learned import learned_component
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
    learned_steps: int = opt(10, "optimisation steps of the learned safety component", type=int)
    learned_harmful: int = opt(8, "harmful train prompts in the learned component's objective",
                               type=int)
    learned_items: int = opt(4, "training A/B items of the behaviour (both orders) the learned "
                             "component keeps", type=int)
    learned_lr: float = opt(0.05, "learning rate of the learned component", type=float)
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
        """The fields, less the clamps' own when no clamp runs (a mitigation run made before
        the clamps existed keeps its settings)."""
        out = asdict(self)
        if not set(CLAMPS) & set(self.mitigations):
            del out["clamp_layers"], out["n_timing"]
        return out


def _log(msg: str) -> None:
    print(f"[steerlens] {msg}", file=sys.stderr, flush=True)


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
        items = behaviour_split(sv.meta.get("behaviour", name), "generate")[-mcfg.learned_items:]
        harmful = instructions("harmful_train", mcfg.learned_harmful, cfg.seed + 2)
        _log(f"learned safety component: {tag} ({mcfg.learned_steps} steps)")
        return learned_component(model, v, ref.layer, harmful, items, unit(ref.direction.at(ref.layer)),
                                 mcfg.learned_steps, mcfg.learned_lr, system=cfg.system)

    def save(comp, path) -> None:
        save_tensors(path, {"direction": comp.direction},
                     {"curve": comp.curve, "best_step": comp.best_step})

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


def clamp_settings(model, cfg: AuditConfig, ref: Refusal, sub, vectors, scale: float,
                   layers: list[int]) -> list[Setting]:
    """clamp1 and clampk of every CAA vector's +v at every audited dose (the generated
    mediation's cells; `mitigation_settings` builds the same ones)."""
    frame = Frame.of(model, ref, sub)
    out = []
    for d in cfg.doses:
        for name, sv in vectors.vectors.items():
            v = dosed(sv.at(ref.layer), d, scale)
            out += [fix_setting(frame, name, d, f, v, clamp(ref, sub, f, frame.add(v), layers))
                    for f in CLAMPS]
    return out


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
            for m in mcfg.mitigations:
                if m == "learned" and not has_behaviour(sv):
                    continue  # no behaviour items to keep the effect on (a --vector file)
                out.append(fix_setting(c.frame, name, d, m, v, c.steering(m, name, sv, tag, v)))
    return out
