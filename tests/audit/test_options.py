"""No input silently dropped or misread: the rule of `audit.options` on the audit's, mitigate's and
study's command lines and Python entry points, every list option, and a property test over the
option definitions (no model is loaded, except for one tiny-model run with two vector files)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from steerlens.audit import mitigate
from steerlens.audit.config import AuditConfig, build_parser, config_from_args
from steerlens.audit.fixes import DEFAULT_MITIGATIONS, MITIGATIONS, MitigateConfig
from steerlens.audit.flags import config_of
from steerlens.audit.options import LIST_RULE, ListAction, specs_from_dataclass
from steerlens.audit.validation import validate
from steerlens.errors import SteerlensError

# Per list option of the audit: three distinct valid values, spread over repeated flags below.
AUDIT_LISTS = {
    "behaviours": ["sycophancy", "refusal", "survival-instinct"],
    "attacks": ["none", "aim", "prefix_injection"],
    "doses": ["0.1", "0.15", "2"],
    "dose_sweep": ["-0.3", "0.15", "0.3"],
    "methods": ["mean_difference", "pca_diff", "actadd"],
    "vector_settings": ["plus", "minus", "perp1"],
    "screen_doses": ["0.05", "0.1", "0.3"],
    "vectors": ["a.safetensors", "b.safetensors", "c.gguf"],
    "multipliers": ["0.5", "1", "1.5"],
}


def _flag(name: str) -> str:
    return "--vector" if name == "vectors" else "--" + name.replace("_", "-")


def _outcome(parse, check):
    """(config, None) if `parse` (run with stderr captured) and `check` accept it, or (None,
    message) for an argparse exit 2 (the error line and its fix line) or a SteerlensError."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg = parse()
        check(cfg)
        return cfg, None
    except SystemExit as e:
        assert e.code == 2, err.getvalue()
        return None, err.getvalue().strip()
    except SteerlensError as e:
        return None, str(e)


def _audit(argv: list[str]):
    """As `python -m steerlens.audit` would audit it; nothing is loaded: parse, config,
    validate (the order of main and run_audit)."""
    return _outcome(lambda: config_from_args(build_parser().parse_args(argv))[0], validate)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vectors")
    for name in ("a.safetensors", "b.safetensors", "c.gguf", "sub/a.safetensors"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"x")  # validate checks existence; reading needs a model
    return root


def test_every_list_option_is_covered_and_says_the_rule():
    lists = {k for k, s in specs_from_dataclass(AuditConfig).items() if s.many}
    assert lists == set(AUDIT_LISTS)
    actions = {a.dest: a for a in build_parser()._actions}
    for name in lists:
        assert isinstance(actions[name], ListAction) and LIST_RULE in actions[name].help, name
    for a in mitigate.build_parser()._actions:
        if a.dest in ("mitigations", "attacks", "vectors"):
            assert isinstance(a, ListAction) and LIST_RULE in a.help, a.dest


@pytest.mark.parametrize("name", sorted(AUDIT_LISTS))
def test_repeated_flags_reach_the_recorded_config(name, files, monkeypatch):
    """`--x v1 v2 --x v3`: the union, in order, is the config and what config.json records."""
    monkeypatch.chdir(files)
    v1, v2, v3 = AUDIT_LISTS[name]
    flag = _flag(name)
    cfg, msg = _audit(["--out", str(files / "run"), flag, v1, v2, flag, v3])
    assert msg is None, msg
    want = ([float(v) for v in (v1, v2, v3)] if "dose" in name or name == "multipliers"
            else [v1, v2, v3])
    assert list(getattr(cfg, name)) == want
    recorded = json.loads(json.dumps(cfg.to_json()))  # the "config" run_audit writes to config.json
    assert recorded[name] == want and AuditConfig.from_json(recorded) == cfg


@pytest.mark.parametrize("argv, option", [
    (["--attacks", "none", "none"], "--attacks"),
    (["--behaviours", "sycophancy", "--behaviours", "sycophancy"], "--behaviours"),
    (["--doses", "0.15", "--doses", ".15"], "--doses"),
    (["--vector", "a.safetensors", "--vector", "a.safetensors"], "--vector"),
    (["--n-goals", "30", "--n-goals", "20"], "--n-goals"),
    (["--n-goals", "30", "--n-goals", "30"], "--n-goals"),
    (["--out", "x", "--out", "y"], "--out"),
])
def test_a_value_given_twice_is_an_error_naming_it(argv, option):
    cfg, msg = _audit(argv)
    assert cfg is None and f"argument {option}:" in msg and "more than once" in msg


def test_two_files_of_one_name_are_an_error(files):
    cfg, msg = _audit(["--vector", str(files / "a.safetensors"), str(files / "sub/a.safetensors")])
    assert cfg is None and "would both be audited as file:a" in msg


def test_every_vector_file_is_audited_and_answered(tiny_model_dir, tmp_path, capsys):
    """`--vector a --vector b`: both files are audited, recorded in vectors/files.json and in
    the answer (the tiny model; seconds)."""
    import torch
    from conftest import audit_args

    from steerlens.audit.run import main
    from steerlens.core.vectors import SteeringVector

    for name in ("a", "b"):
        SteeringVector(torch.randn(2, 64), [0, 1]).save(tmp_path / f"{name}.safetensors")
    run = tmp_path / "run"
    args = audit_args(tiny_model_dir, run, "--vector", str(tmp_path / "a.safetensors"), "--vector",
                      str(tmp_path / "b.safetensors"), "--layer", "1", "--behaviours", "refusal",
                      "--attacks", "none", "--n-goals", "2", "--n-benign", "0", "--n-null-generate",
                      "0", "--n-null-screen", "2", "--n-shuffled", "0", "--n-caa-items", "2",
                      "--n-behaviour-test", "2", "--dose-sweep", "2", "--vector-settings", "plus",
                      "--no-report")
    assert main(args) == 0
    answer = capsys.readouterr().out
    files = json.loads((run / "vectors" / "files.json").read_text())
    assert set(files) == {"file:a", "file:b"}
    assert json.loads((run / "config.json").read_text())["config"]["vectors"] == [
        str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    summary = json.loads((run / "summary.json").read_text())
    assert {f["vector"] for f in summary["vectors"]} == {"refusal", "file:a", "file:b"}
    lines = answer.splitlines()
    for name in ("file:a", "file:b", "refusal"):
        assert any(line.startswith(name + " ") for line in lines), name


def test_help_states_the_rule(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a value given twice is an error" in text and "may be given once" in text


# -- Python entry points ---------------------------------------------------------------------

class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """`steerlens.audit(...)` up to the run: the config it would audit (no model loaded)."""
    seen = {}

    def fake(cfg, opts):
        seen["cfg"], seen["opts"] = cfg, opts
        raise _Stop

    monkeypatch.setattr("steerlens.audit.run.run_audit", fake)
    return seen


def test_python_single_string_is_one_value(captured, tmp_path):
    import steerlens

    v = tmp_path / "v.gguf"
    with pytest.raises(_Stop):
        steerlens.audit(out=tmp_path / "r", behaviours="sycophancy", vectors=v, attacks="aim",
                        doses=0.3, no_report=True)
    cfg = captured["cfg"]
    assert cfg.behaviours == ("sycophancy",) and cfg.vectors == (str(v),)
    assert cfg.attacks == ("aim",) and cfg.doses == (0.3,) and not captured["opts"].report
    with pytest.raises(_Stop):
        steerlens.audit(out=str(tmp_path / "r"), behaviours=("refusal", "sycophancy"), doses=[1, 2])
    assert captured["cfg"].behaviours == ("refusal", "sycophancy")
    assert captured["cfg"].doses == (1.0, 2.0)  # an int where a float is asked


@pytest.mark.parametrize("kw, option, expected", [
    (dict(behaviours=3), "behaviours", "a list of strings"),
    (dict(behaviours={"sycophancy": 1}), "behaviours", "a list of strings"),
    (dict(vectors=[1, 2]), "vectors", "item 0 is int 1"),
    (dict(vectors=b"v.gguf"), "vectors", "a list of strings"),
    (dict(doses=["0.1"]), "doses", "a list of numbers"),
    (dict(doses={0.1}), "doses", "a list of numbers"),
    (dict(n_goals="30"), "n_goals", "an int"),
    (dict(n_goals=30.0), "n_goals", "an int"),
    (dict(n_goals=True), "n_goals", "an int"),
    (dict(no_report="yes"), "no_report", "True or False"),
    (dict(attacks=["none", "none"]), "attacks", "more than once"),
    (dict(refusal_positions="first"), "refusal_positions", "one of: last, all"),
    (dict(preset="huge"), "preset", "one of"),
    (dict(out=3), "out", "a string"),
])
def test_python_wrong_types_are_named_before_any_work(captured, tmp_path, kw, option, expected):
    import steerlens

    kw.setdefault("out", tmp_path / "r")
    with pytest.raises(SteerlensError) as e:
        steerlens.audit(**kw)
    assert re.search(rf"option {option}\b", str(e.value)) and expected in str(e.value)
    assert "cfg" not in captured  # the run (and its model) never started


def test_mitigate_and_study_python_entry_points(tmp_path):
    import steerlens
    from steerlens.audit.mitigate import run_mitigate

    assert MitigateConfig(attacks="none", vectors="file:v").vectors == ("file:v",)
    for kw, option in ((dict(mitigations=3), "mitigations"), (dict(n_capability="100"), "n_capability"),
                       (dict(attacks=["aim", "aim"]), "attacks"), (dict(learned_lr="0.1"), "learned_lr")):
        with pytest.raises(SteerlensError, match=rf"option {option}\b"):
            MitigateConfig(**kw)
        with pytest.raises(SteerlensError, match=rf"option {option}\b"):
            steerlens.mitigate(tmp_path, **kw)
    with pytest.raises(SteerlensError, match=r"option run\b"):
        steerlens.mitigate(3)
    with pytest.raises(SteerlensError, match="takes a MitigateConfig"):
        run_mitigate(tmp_path, {"mitigations": ["gate"]})
    for kw, option in ((dict(out=3), "out"), (dict(out=tmp_path / "s", model=5), "model"),
                       (dict(out=tmp_path / "s", resume="yes"), "resume"),
                       (dict(out=tmp_path / "s", scan="no"), "scan")):
        with pytest.raises(SteerlensError, match=rf"option {option}\b"):
            steerlens.study(**kw)
    assert not list(tmp_path.iterdir())


def test_mitigate_repeated_flags_reach_its_config():
    p = mitigate.build_parser()
    a = p.parse_args(["run", "--mitigations", "gate", "--attacks", "none", "--mitigations",
                      "perp1", "learned", "--vectors", "x", "--vectors", "y"])
    m = json.loads(json.dumps(config_of(MitigateConfig, vars(a)).to_json()))  # mitigations/config.json
    assert (m["mitigations"], m["attacks"], m["vectors"]) == (
        ["gate", "perp1", "learned"], ["none"], ["x", "y"])
    assert config_of(MitigateConfig, vars(p.parse_args(["run"]))).mitigations == DEFAULT_MITIGATIONS


# -- the property: every value kept, or exit 2 naming the option -------------------------------

@dataclass(frozen=True)
class Opt:
    """A flag, its item type and the values drawn for it (bad: rejected alone or by the rule)."""

    flag: str
    field: str
    convert: type
    good: tuple
    bad: tuple
    many: bool = True


AUDIT_OPTS = [
    Opt("--behaviours", "behaviours", str, ("sycophancy", "refusal", "hallucination"), ("flattery",)),
    Opt("--attacks", "attacks", str, ("none", "aim", "refusal_suppression"), ("dan-9000",)),
    Opt("--doses", "doses", float, ("0.1", "0.15", ".15", "2"), ("0", "-0.15", "abc", "inf", "nan")),
    Opt("--dose-sweep", "dose_sweep", float, ("-0.3", "-1e-1", "0.15", "0.3"), ("0", "x", "-inf")),
    Opt("--screen-doses", "screen_doses", float, ("0.05", "0.3"), ("-0.1", "0", "1e")),
    Opt("--methods", "methods", str, ("mean_difference", "pca_diff", "linear_probe"), ("pca",)),
    Opt("--vector-settings", "vector_settings", str, ("plus", "minus", "perpk"), ("orth",)),
    Opt("--vector", "vectors", str, ("a.safetensors", "b.safetensors", "c.gguf"),
        ("missing.safetensors", "sub/a.safetensors")),
    Opt("--n-goals", "n_goals", int, ("1", "30", "100"), ("0", "101", "x", "2.5"), many=False),
    Opt("--n-null-screen", "n_null_screen", int, ("0", "8"), ("-1", "z"), many=False),
    Opt("--layer", "layer", int, ("0", "14"), ("-1", "1.0"), many=False),
    Opt("--seed", "seed", int, ("0", "7"), ("-3",), many=False),
    Opt("--preset", "preset", str, ("quick", "standard", "library"), ("huge",), many=False),
]


def _item_ok(o: Opt, v: str) -> bool:
    if v in o.bad and not (o.field == "vectors" and v == "sub/a.safetensors"):
        return False
    try:
        o.convert(v)
    except ValueError:
        return False
    return True


def _offends(o: Opt, groups: list[list[str]]) -> bool:
    """Whether the option's flags, as given, break the rule or a bound (the test's own oracle)."""
    values = [v for g in groups for v in g]
    if any(not g for g in groups) or (not o.many and len(groups) > 1):
        return True
    if not all(_item_ok(o, v) for v in values):
        return True
    keys = [o.convert(v) for v in values] if o.field != "vectors" else [Path(v).stem for v in values]
    if len(set(keys)) < len(keys):
        return True  # a value (or a file's vector name) given twice
    return o.field == "vector_settings" and "plus" not in values


def _expected(o: Opt, values: list[str]):
    if o.field == "vectors":
        return tuple(values)
    got = tuple(o.convert(v) for v in values)
    return got if o.many else got[0]


def _value(o: Opt):
    good = st.sampled_from(o.good)
    return st.one_of(good, good, st.sampled_from(o.bad)) if o.bad else good  # ~1 in 3 bad


def _clean(draw, o: Opt) -> list[list[str]]:
    """Valid groups: distinct good values over 1-3 flags (single-valued: one flag, one value)."""
    if not o.many:
        return [[draw(st.sampled_from(o.good))]]
    distinct = len({o.convert(v) for v in o.good})
    values = draw(st.lists(st.sampled_from(o.good), min_size=1, max_size=min(3, distinct),
                           unique_by=o.convert))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(values) - 1), max_size=2)))) if len(values) > 1 else []
    return [values[a:b] for a, b in zip([0, *cuts], [*cuts, len(values)])]


def _messy(draw, o: Opt) -> list[list[str]]:
    """Anything: 1-3 flags (single-valued: mostly 1) of 0-3 values, good or bad, repeats allowed."""
    groups = []
    for _ in range(draw(st.integers(1, 3) if o.many else st.sampled_from((1, 1, 1, 2)))):
        n = draw(st.integers(0, 3) if o.many else st.sampled_from((1, 1, 1, 1, 0)))
        groups.append(draw(st.lists(_value(o), min_size=n, max_size=n)))
    return groups


@st.composite
def flag_sequences(draw, opts):
    """Some options, each given cleanly (2 in 3) or messily, their flags shuffled together."""
    chosen = draw(st.lists(st.sampled_from(opts), min_size=1, max_size=5, unique_by=lambda o: o.flag))
    groups = []
    for o in chosen:
        make = _clean if draw(st.sampled_from((True, True, False))) else _messy
        groups += [(o, g) for g in make(draw, o)]
    return draw(st.permutations(groups))


def _names_one_of(msg: str, flags: list[str]) -> bool:
    return any(re.search(re.escape(f) + r"(?![-\w])", msg) for f in flags)


def _check_sequence(seq, run, opts_of, fixed: list[str]) -> None:
    argv = list(fixed)
    for o, values in seq:
        argv += [o.flag, *values]
    by_opt: dict = {}
    for o, values in seq:
        by_opt.setdefault(o, []).append(values)
    offending = [o.flag for o, groups in by_opt.items() if _offends(o, groups)]
    cfg, msg = run(argv)
    _event(seq, by_opt, offending, cfg)
    if offending:
        assert cfg is None, f"accepted {argv}: {offending} should have been refused"
        assert _names_one_of(msg, offending), f"{argv}: {msg!r} names none of {offending}"
    else:
        assert cfg is not None, f"refused {argv}: {msg}"
        for o, groups in by_opt.items():
            got = opts_of(cfg)[o.field]
            assert got == _expected(o, [v for g in groups for v in g]), (argv, o.field, got)


def _event(seq, by_opt, offending, cfg) -> None:
    """Hypothesis statistics: what kind of sequence this was and how it ended."""
    event("accepted" if cfg is not None else "exit 2")
    if any(len(g) > 1 for g in by_opt.values()):
        event("an option repeated")
    if any(not v for _, v in seq):
        event("an empty list")
    if any(o.many and len(vals) > 1 for o, vals in seq):
        event("several values after one flag")
    flat = {o: [v for g in gs for v in g] for o, gs in by_opt.items()}
    if any(len(set(vals)) < len(vals) for vals in flat.values()):
        event("a value given twice")
    if any(v in o.bad for o, vals in flat.items() for v in vals):
        event("a bad value (out of range, unknown or wrong type)")


PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(seq=flag_sequences(AUDIT_OPTS))
def test_audit_flags_keep_every_value_or_exit_2_naming_the_option(seq, files, monkeypatch):
    monkeypatch.chdir(files)
    _check_sequence(seq, _audit, lambda cfg: cfg.__dict__, ["--out", "run"])


MITIGATE_OPTS = [
    Opt("--mitigations", "mitigations", str, MITIGATIONS, ("flip",)),
    Opt("--attacks", "attacks", str, ("none", "aim"), ()),
    Opt("--vectors", "vectors", str, ("sycophancy", "file:v"), ()),
    Opt("--n-capability", "n_capability", int, ("1", "100"), ("0", "x"), many=False),
    Opt("--learned-steps", "learned_steps", int, ("1", "10"), ("0", "1.5"), many=False),
]


def _mitigate(argv: list[str]):
    """mitigate's config from its command line, checked as far as it can be without a run."""
    return _outcome(lambda: config_of(MitigateConfig, vars(mitigate.build_parser().parse_args(argv))),
                    mitigate.check_config)


@PROPERTY
@given(seq=flag_sequences(MITIGATE_OPTS))
def test_mitigate_flags_keep_every_value_or_exit_2_naming_the_option(seq):
    _check_sequence(seq, _mitigate, lambda m: m.__dict__, ["RUN"])
