"""The package's public names: one import line for what the README shows, loaded lazily so that importing the
package (and `anymoda --help`) stays fast."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import orchestrator


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, orchestrator; heavy = [m for m in ('torch', 'transformers', 'langgraph', 'yaml') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("name", ["Orchestrator", "Session", "RunResult", "Event", "Planner", "Composer", "Workflow",
                                  "Pipeline", "step", "item", "pipeline_function", "run_batch", "WeightlessTool",
                                  "Tool", "ToolRegistry", "ArtifactStore", "Settings"])
def test_every_public_name_imports_from_the_package(name):
    value = getattr(orchestrator, name)
    assert name in orchestrator.__all__ and name in dir(orchestrator)
    assert getattr(orchestrator, name) is value


def test_an_unknown_name_is_an_attribute_error_and_the_version_is_the_installed_one():
    with pytest.raises(AttributeError, match="no attribute 'Orchestra'"):
        orchestrator.Orchestra  # noqa: B018
    assert orchestrator.__version__ == metadata.version("anymoda")
