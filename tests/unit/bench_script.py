"""Loading a script of hack/bench/ as a module, for the tests of its pure parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "hack" / "bench"


def load(script: str, name: str) -> ModuleType:
    """hack/bench/`script` as the module `name`."""
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
