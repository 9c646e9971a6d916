"""pyproject.toml declares every package the code imports at run time, with floors matching requirements.txt."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runtime code: the package, and the console (``qflow app`` runs app.py with its pages and ui helpers).
RUNTIME_SOURCES = ("qflow", "app.py", "views", "ui")

#: Distributions used without an import statement naming them, and why.
USED_WITHOUT_IMPORT = {
    "pennylane-lightning": "the lightning.qubit device, found with importlib.util.find_spec",
    "python-multipart": "FastAPI parses the API's multipart form fields with it",
}


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, f"unreadable requirement {spec!r}"
    return canonical(match.group(1))


def declared() -> dict[str, str]:
    """``{canonical name: requirement text}`` of pyproject's [project] dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {requirement_name(spec): spec for spec in project["dependencies"]}


def python_files() -> list[Path]:
    files: list[Path] = []
    for name in RUNTIME_SOURCES:
        path = ROOT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def top_level_imports(path: Path) -> set[str]:
    """Absolute imports' first components, including imports inside functions (lazy imports run too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def local_names() -> set[str]:
    """Top-level names that are this repository's own code (``qflow``, ``ui``, ...)."""
    return {p.stem for p in ROOT.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}


def third_party_imports() -> dict[str, set[str]]:
    """``{top-level module: {files importing it}}`` for every import outside the stdlib and this repository."""
    found: dict[str, set[str]] = {}
    ours = local_names()
    for path in python_files():
        for name in top_level_imports(path):
            if name not in sys.stdlib_module_names and name not in ours and name != "__future__":
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_scan_finds_the_known_imports():
    """The scan itself works: it sees imports at module level and inside functions."""
    found = third_party_imports()
    assert {"numpy", "torch", "yaml", "sklearn", "fastapi", "zstandard", "safetensors"} <= set(found)
    assert "qflow" not in found and "json" not in found


def test_every_runtime_import_is_declared():
    distributions = importlib.metadata.packages_distributions()
    have = declared()
    missing = []
    for module, files in sorted(third_party_imports().items()):
        dists = distributions.get(module)
        assert dists, f"{module} (imported in {sorted(files)[0]}) belongs to no installed distribution"
        if not any(canonical(d) in have for d in dists):
            missing.append(f"{module} -> {dists[0]} (imported in {sorted(files)[0]})")
    assert not missing, "pyproject.toml dependencies lack: " + "; ".join(missing)


def test_packages_used_without_import_are_declared():
    have = declared()
    assert not [name for name in USED_WITHOUT_IMPORT if name not in have]


def test_floors_match_the_tested_pins():
    """Each floor is the major.minor of requirements.txt's exact pin (the versions the suite runs with)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[canonical(name)] = version
    for name, spec in declared().items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt"
        floor = re.search(r">=\s*([0-9][0-9.]*)", spec)
        assert floor, f"{spec}: no >= floor"
        assert pins[name].split(".")[:2] == floor.group(1).split(".")[:2], f"{spec} vs pin {pins[name]}"
