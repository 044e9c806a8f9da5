"""One Python entry per job, the CLI a thin layer: the flags of audit, mitigate and study are
generated from their config dataclasses, their Python keywords checked the same way, and a
finished run is opened one way (read-only)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

import steerlens
from steerlens.audit.config import AuditConfig, audit_options, build_parser
from steerlens.audit.fixes import MitigateConfig
from steerlens.audit.flags import flag_fields, flag_name
from steerlens.audit.study import StudyConfig
from steerlens.errors import SteerlensError
from steerlens.rundir import ReadOnlyStore, open_run


@pytest.mark.parametrize("command, cls", [("audit", AuditConfig), ("mitigate", MitigateConfig),
                                          ("study", StudyConfig)])
def test_every_config_field_is_a_flag_of_its_subcommand(command, cls, capsys):
    from steerlens.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    assert [flag_name(f) for f in flag_fields(cls) if flag_name(f) not in text] == []


def test_mitigate_fields_are_all_flags():
    assert {f.name for f in flag_fields(MitigateConfig)} == {f.name for f in fields(MitigateConfig)}


def test_python_audit_options_equal_the_command_line(tmp_path):
    argv = ["--preset", "quick", "--out", str(tmp_path), "--behaviours", "refusal", "--n-goals", "7",
            "--no-report", "--resume"]
    want = audit_options(**vars(build_parser().parse_args(argv)))
    got = audit_options("quick", tmp_path, behaviours=["refusal"], n_goals=7, no_report=True,
                        resume=True)
    assert got == want and got[0].behaviours == ("refusal",) and not got[1].report


@pytest.mark.parametrize("call", [lambda p: steerlens.mitigate(p, n_capabilty=3),
                                  lambda p: steerlens.study(out=p / "s", scans=False),
                                  lambda p: steerlens.audit(out=p / "a", preset="quick", n_goal=3)])
def test_unknown_keywords_name_the_option_before_any_work(call, tmp_path):
    with pytest.raises(SteerlensError, match="unknown .* option"):
        call(tmp_path)


def test_a_finished_run_opens_read_only(tmp_path):
    with pytest.raises(SteerlensError, match="does not exist"):
        open_run(tmp_path / "nope")
    with pytest.raises(SteerlensError, match="not a finished audit run"):
        open_run(tmp_path)
    for name in ("config.json", "summary.json"):
        (tmp_path / name).write_text("{}")
    store = open_run(tmp_path)
    assert isinstance(store, ReadOnlyStore)
    with pytest.raises(SteerlensError, match="read-only"):
        store.write_json("x.json", {})
    with pytest.raises(SteerlensError, match="has no dose.json"):
        store.cached_json("dose.json", dict)
    assert not (tmp_path / "x.json").exists()


def test_bad_flags_print_the_one_error_style(capsys):
    from steerlens.cli import main

    for argv in (["audit", "--n-goals", "x"], ["mitigate"], ["study", "--bogus"], ["nosuch"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("steerlens: error: ") and "\n  fix: " in err


SCRIPTS = sorted(p for d in ("benchmarks", "experiments")
                 for p in (Path(__file__).resolve().parents[1] / d).glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_imports(script, monkeypatch):
    """A script's imports resolve (a module that moved breaks a pre-registered command only
    when it is run, hours later); nothing runs: the module is loaded, not as __main__."""
    import importlib.util

    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"_script_{script.stem}", script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
