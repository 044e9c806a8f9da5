"""The audit: config, stages, settings, the evaluation grid and its backends, replay.

`steerlens.audit(preset="quick", out="runs/quick", **overrides)` runs an audit from Python
and returns an `AuditResult` (the same run directory as `python -m steerlens.audit`); the
module itself is callable for that, so `python -m steerlens.audit` and the function share one
name.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, preset: str = "quick", out: str = "runs/audit", **overrides):
        from steerlens.audit.api import audit

        return audit(preset=preset, out=out, **overrides)


sys.modules[__name__].__class__ = _CallableModule
