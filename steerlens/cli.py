"""The `steerlens` command: one entry point, a subcommand per job (each keeps its own flags,
help and exit codes; `python -m steerlens.audit` is the same as `steerlens audit`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from steerlens.errors import ArgumentParser

# subcommand -> (module with main(argv), one line of help)
COMMANDS = {
    "audit": ("steerlens.audit.run", "run or resume an audit (python -m steerlens.audit)"),
    "mitigate": ("steerlens.audit.mitigate", "what fixes a finished audit's vectors, at what cost"),
    "study": ("steerlens.audit.study", "the vector-library study: two audits, the layer scan, "
              "the analysis"),
    "report": ("steerlens.results.report", "rebuild a run's dashboard from its saved files"),
    "export": ("steerlens.audit.export", "write a run's vector or static fix as a GGUF, "
               "steering-vectors or .svec file"),
    "rejudge": ("steerlens.judges.rejudge", "re-judge a run's saved completions with another judge"),
    "findings": ("steerlens.results.findings", "regenerate docs/findings.md from committed runs"),
    "judges": ("steerlens.judges.calibration", "calibrate or train a judge against JBB's labels"),
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="steerlens", description="Audit activation steering vectors "
                                "for safety: one subcommand per job.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv[:1])  # prints usage (exit 2) or --help (exit 0)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sys.argv[0] = f"steerlens {argv[0]}"
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
