"""Every steering condition of an audit, as data, defined once: the grid's settings (baseline;
per vector and dose +v, -v, +v⊥1, +v⊥k and label-shuffled nulls; +v screened at further doses;
the model-level nulls), the refusal validation, and the fixes `audit.mitigate` adds (+v⊥1,
+v⊥k, compensated, gated, learned, clamped to the unsteered twin in 1-D and k-D). A setting's
name is `vector@dose` + its kind's value, so the audit and a mitigation run name the same
condition the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import Tensor

from steerlens.audit.artefacts import Refusal, Vectors
from steerlens.audit.config import AuditConfig
from steerlens.audit.deployed import deployed_steering, is_deployed, matched_nulls
from steerlens.core.geometry import orthogonalize, orthogonalize_subspace, rescale
from steerlens.core.steering import Steering, ablation, addition
from steerlens.core.vectors import SteeringVector
from steerlens.methods.nulls import covariance_directions, pair_differences
from steerlens.methods.subspace import RefusalSubspace
from steerlens.schema import FIX_SUFFIX


class Kind(str, Enum):
    """What a steering setting is, as data (never parsed from its name)."""

    BASELINE = "baseline"
    PLUS = "+v"
    MINUS = "-v"
    PERP1 = "+v_perp1"  # orthogonalised against the refusal direction (the paper's mitigation)
    PERPK = "+v_perpk"  # orthogonalised against the refusal subspace
    RANDOM = "random"  # norm-matched random direction (null)
    SHUFFLED = "shuffled"  # label-shuffled CAA vector (null)
    COVARIANCE = "covariance"  # drawn from the covariance of residual activations (null)
    PAIR_DIFF = "pair_diff"  # difference of a random prompt pair's activations (null)
    RANDOM_MATCHED = "random_matched"  # random per layer with a deployed vector's norms (null)
    SCREEN = "+v_screen"  # +v at a further dose, screened at the first step only
    COMPENSATED = "+v_comp"  # +v with downstream compensation (audit.mitigate)
    GATED = "+v_gated"  # +v behind CAST's condition gate (audit.mitigate)
    LEARNED = "+v_learned"  # +v less its learned safety component (audit.mitigate)
    CLAMP1 = "+v_clamp1"  # +v, refusal direction held at the unsteered twin's (core.patching)
    CLAMPK = "+v_clampk"  # +v, refusal subspace held at the unsteered twin's
    REFUSAL_ABLATED = "refusal_ablated"  # directional ablation of the refusal direction
    SUBSPACE_ABLATED = "subspace_ablated"  # ablation of the k-D refusal subspace
    REFUSAL_ADDED = "refusal_added"  # the refusal direction added at its layer


# `AuditConfig.vector_settings` names and `mitigate`'s fixes, by the kind each one builds
VECTOR_KINDS = {"plus": Kind.PLUS, "minus": Kind.MINUS, "perp1": Kind.PERP1, "perpk": Kind.PERPK}
FIX_KINDS = {fix: Kind(suffix) for fix, suffix in FIX_SUFFIX.items()}


@dataclass(frozen=True)
class Setting:
    """One steering condition of the grid."""

    name: str
    kind: Kind
    steering: Steering = field(default_factory=Steering, repr=False)  # or a TwinClamp (clamp1/k)
    vector: str | None = None  # the audited vector it belongs to
    dose: float = 0.0  # signed, in the run's dose unit
    generate: bool = True  # False: screened at the first step only (most null directions)
    protocol: str = "caa"  # "deployed": as the vector's library applies it (audit.deployed)
    held_layers: tuple[int, ...] = ()  # a clamp's layers (its steering is a TwinClamp)

    def meta(self) -> dict:
        extra = {} if self.protocol == "caa" else {"protocol": self.protocol}
        if self.held_layers:
            extra["clamp_layers"] = list(self.held_layers)
        return {"kind": self.kind.value, "vector": self.vector, "dose": self.dose,
                "generated": self.generate, **extra}


def setting_name(vector: str, dose: float, kind: Kind) -> str:
    """`vector@dose` + the kind's value: `sycophancy@0.15+v_perp1`."""
    return f"{vector}@{dose:g}{kind.value}"


@dataclass(frozen=True)
class Frame:
    """Where a vector is added and what it is orthogonalised against: the steering layer, the
    refusal direction there and the first k rows of the subspace, on the model's device."""

    layer: int
    direction: Tensor
    basis: Tensor
    device: object

    @classmethod
    def of(cls, model, ref: Refusal, sub: RefusalSubspace) -> Frame:
        return cls(ref.layer, ref.direction.at(ref.layer), sub.basis[: sub.evidence["k"]],
                   model.cfg.device)

    def add(self, v: Tensor) -> Steering:
        """`v` added at the steering layer after the instruction (CAA's rule)."""
        return addition(v.float().to(self.device), self.layer)

    def transform(self, kind: Kind, v: Tensor) -> Tensor:
        """The vector a +v, -v, +v⊥1 or +v⊥k setting adds, from the dosed vector `v`."""
        if kind is Kind.MINUS:
            return -v
        if kind is Kind.PERP1:
            return orthogonalize(v, self.direction)
        if kind is Kind.PERPK:
            return orthogonalize_subspace(v, self.basis)
        return v


def vector_setting(frame: Frame, name: str, dose: float, kind: Kind, v: Tensor) -> Setting:
    """+v, -v (at the negated dose), +v⊥1 or +v⊥k of `v`, the vector `name` at `dose`."""
    return Setting(setting_name(name, dose, kind), kind, frame.add(frame.transform(kind, v)),
                   name, -dose if kind is Kind.MINUS else dose)


def dosed(v: Tensor, dose: float, scale: float) -> Tensor:
    """`v` rescaled to `|dose| * scale`, signed by the dose."""
    return rescale(v.float(), abs(dose) * scale) * (1 if dose > 0 else -1)


def _vector_settings(cfg: AuditConfig, frame: Frame, name: str, v: Tensor, d: float,
                     nulls: Sequence[Tensor]) -> list[Setting]:
    """One vector's settings at dose `d`: those `cfg.vector_settings` names, then its
    label-shuffled nulls."""
    out = [vector_setting(frame, name, d, VECTOR_KINDS[k], v)
           for k in VECTOR_KINDS if k in cfg.vector_settings]
    return out + [Setting(f"{name}@{d:g}{Kind.SHUFFLED.value}{j}", Kind.SHUFFLED, frame.add(n),
                          name, d) for j, n in enumerate(nulls)]


def random_directions(n: int, d: int, seed: int) -> Tensor:
    """Isotropic random directions (the random null), from their own seeded generator."""
    g = torch.Generator().manual_seed(10_000 + seed)
    return torch.randn(n, d, generator=g)


def null_directions(cfg: AuditConfig, ref: Refusal, d_model: int) -> dict:
    """The model-level null directions by kind: isotropic random (screened and generated);
    covariance draws from the *within-class* covariance of the refusal train activations at
    the steering layer (harmful and harmless each centred on its own mean, so the draws carry
    no harmful-vs-harmless signal); differences of random prompt pairs of the *same* class
    (harmful pairs and harmless pairs alternating: a harmful−harmless pair would be a noisy
    refusal direction). `methods.nulls`."""
    h, ll = ref.harmful.float(), ref.harmless.float()
    within = torch.cat([h - h.mean(0), ll - ll.mean(0)])
    n = cfg.n_null_pairs
    pairs = torch.stack([x for ab in zip(pair_differences(h, (n + 1) // 2, cfg.seed),
                                         pair_differences(ll, (n + 1) // 2, cfg.seed + 1))
                         for x in ab][:n]) if n else torch.empty(0, d_model)
    return {"random": random_directions(cfg.n_null_screen + cfg.n_null_generate, d_model, cfg.seed),
            "covariance": covariance_directions(within, cfg.n_null_covariance, cfg.seed),
            "pair_diff": pairs}


def _model_nulls(cfg: AuditConfig, nulls: dict, d: float, scale: float, add) -> list[Setting]:
    out = [Setting(f"random{i}@{d:g}", Kind.RANDOM, add(dosed(x, d, scale)), None, d,
                   generate=i < cfg.n_null_generate) for i, x in enumerate(nulls["random"])]
    out += [Setting(f"covariance{i}@{d:g}", Kind.COVARIANCE, add(dosed(x, d, scale)), None, d)
            for i, x in enumerate(nulls["covariance"])]
    return out + [Setting(f"pairdiff{i}@{d:g}", Kind.PAIR_DIFF, add(dosed(x, d, scale)), None, d)
                  for i, x in enumerate(nulls["pair_diff"])]


def build_settings(cfg: AuditConfig, model, ref: Refusal, sub: RefusalSubspace, vectors: Vectors,
                   scale: float) -> list[Setting]:
    """Every steering condition: baseline; per vector and dose +v, -v, +v_perp1, +v_perpk (those
    `cfg.vector_settings` names) and label-shuffled nulls; +v screened at `cfg.screen_doses`;
    per dose the model-level nulls (random, covariance, prompt-pair differences)."""
    frame, L = Frame.of(model, ref, sub), ref.layer
    nulls = null_directions(cfg, ref, model.cfg.d_model)
    caa = {n: sv for n, sv in vectors.vectors.items() if not is_deployed(cfg, n)}
    out = [Setting("baseline", Kind.BASELINE)]
    for d in cfg.doses if caa else ():
        for name, sv in caa.items():
            shuffled = [dosed(n, d, scale) for n in vectors.nulls.get(name, [])]
            out += _vector_settings(cfg, frame, name, dosed(sv.at(L), d, scale), d, shuffled)
        out += _model_nulls(cfg, nulls, d, scale, frame.add)
    for d in cfg.screen_doses:
        out += [Setting(setting_name(name, d, Kind.SCREEN), Kind.SCREEN,
                        frame.add(dosed(sv.at(L), d, scale)), name, d, generate=False)
                for name, sv in caa.items()]
    for name in (n for n in vectors.vectors if n not in caa):
        out += deployed_settings(cfg, model, name, vectors.vectors[name])
    return out


def deployed_settings(cfg: AuditConfig, model, name: str, sv: SteeringVector) -> list[Setting]:
    """`--protocol deployed` (`audit.deployed`): per coefficient the file as its library applies
    it (`NAME@c+v`, kind +v) and its matched nulls (`NAME@c random_matched<i>`: the first
    `n_null_generate` generated, the rest screened), all owned by the vector."""
    n_layers, dev = model.cfg.n_layers, model.cfg.device
    nulls = matched_nulls(sv, cfg.n_null_screen + cfg.n_null_generate, cfg.seed, name)
    out = []
    for c in cfg.multipliers:
        out.append(Setting(setting_name(name, c, Kind.PLUS), Kind.PLUS,
                           deployed_steering(sv, c, n_layers, dev), name, c, protocol="deployed"))
        out += [Setting(f"{name}@{c:g}{Kind.RANDOM_MATCHED.value}{i}", Kind.RANDOM_MATCHED,
                        deployed_steering(SteeringVector(x, sv.layers), c, n_layers, dev), name, c,
                        generate=i < cfg.n_null_generate, protocol="deployed")
                for i, x in enumerate(nulls)]
    return out


def validation_settings(model, ref: Refusal, sub: RefusalSubspace) -> list[Setting]:
    """The refusal direction and subspace, checked on JBB: ablated (ASR must rise) and the
    direction added at its layer with coefficient 1 at every position (ASR must fall)."""
    n, dev = model.cfg.n_layers, model.cfg.device
    rd = ref.direction
    return [Setting("refusal_ablated", Kind.REFUSAL_ABLATED, ablation(rd.direction[None].to(dev), n)),
            Setting("subspace_ablated", Kind.SUBSPACE_ABLATED,
                    ablation(sub.basis[: sub.evidence["k"]].to(dev), n)),
            Setting("refusal_added", Kind.REFUSAL_ADDED,
                    addition(rd.direction.to(dev), rd.layer, 1.0, positions="all"))]


def fix_setting(frame: Frame, name: str, dose: float, fix: str, v: Tensor,
                steering: Steering | None = None) -> Setting:
    """A fix of `v` (the vector `name` at `dose`): ⊥1 and ⊥k built here exactly as the grid's;
    compensated, gated, learned and the clamps from the `steering` `audit.fixes` built."""
    kind = FIX_KINDS[fix]
    if steering is None:
        return vector_setting(frame, name, dose, kind, v)
    return Setting(setting_name(name, dose, kind), kind, steering, name, dose,
                   held_layers=tuple(steering.layers) if getattr(steering, "twinned", False) else ())
