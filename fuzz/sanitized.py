"""The sanitized build of a C lane (fuzz/build_sanitized.sh's, with ASan, UBSan and
libFuzzer's coverage) standing in for the one beside the sources, for the harnesses here.
It must run before the lane's Python module is imported (and instrumented)."""

from __future__ import annotations

import importlib.util
import os
import sys


def load_sanitized_lane(variable: str, module_name: str) -> None:
    """When the environment `variable` names a shared object, import it as `module_name`."""
    path = os.environ.get(variable)
    if not path:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
