"""The CLI lists every module without importing any engine's heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pennylane", "sklearn", "scipy", "optuna")


def _modules_after(code: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_building_the_parser_imports_no_engine_library():
    loaded = _modules_after("import qflow.cli as cli\ncli._build_parser()")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_package_exports_still_resolve_and_stay_lazy():
    loaded = _modules_after(
        "import qflow.routing, qflow.energy, qflow.hpo, qflow.nvlink, qflow.attention, qflow.compression\n"
        "from qflow.routing import RoutingConfig\nassert RoutingConfig.__name__ == 'RoutingConfig'")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    loaded = _modules_after("from qflow.energy import plan_energy\nassert callable(plan_energy)")
    assert "sklearn" in loaded  # the engine itself is imported on first use


def test_unknown_export_is_an_attribute_error():
    done = subprocess.run([sys.executable, "-c", "import qflow.routing as r\ntry:\n r.no_such_name\nexcept AttributeError as e:\n print(e)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert "no_such_name" in done.stdout


def test_a_command_line_naming_a_module_imports_only_the_packages_up_to_it():
    loaded = _modules_after_full(
        "import qflow.cli as cli\nspec = cli._module_named_first(['routing', '--tokens', 't.csv'])\n"
        "assert spec is not None and spec.name == 'routing'\ncli._build_parser(spec)")
    assert "qflow.routing._command" in loaded
    assert not {"qflow.energy", "qflow.hpo", "qflow.nvlink", "qflow.attention", "qflow.compression"} & loaded


def test_anything_else_first_gets_the_full_parser():
    import qflow.cli as cli

    for argv in ([], ["--help"], ["sample"], ["serve"], ["no-such-module"], ["-x", "routing"]):
        assert cli._module_named_first(argv) is None, argv
    assert cli._module_named_first(["placement"]).name == "placement"


def _modules_after_full(code: str) -> set[str]:
    """Full module names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))
