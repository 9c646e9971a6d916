"""Command line: ``python -m qflow MODULE --INPUT FILE ... [options]``.

A thin adapter: flags become the module's config, files go through the
module's loaders, the plan is written as JSON. Exit codes: 0 done, 2 bad
input or infeasible instance (one ``error: ...`` line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qflow._version import __version__
from qflow.core.commands import ModuleCommand, available_commands, load_command
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError, QflowError
from qflow.core.io import load_mapping, parse_scalar

__all__ = ["main"]


def _add_config_flags(parser: argparse.ArgumentParser, config_cls: type[QflowConfig]) -> None:
    group = parser.add_argument_group("config (the page's toggles; also --set name=value)")
    for name, field in config_cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" (default: {field.default})"
        if field.annotation is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f"cfg_{name}", default=None, metavar="VALUE", help=help_text)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qflow",
        description="QuantumFlow: planning engine for GPU clusters. Each module reads its input files and writes a JSON plan.",
    )
    parser.add_argument("--version", action="version", version=f"qflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in available_commands():
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        for input_name in (*spec.inputs, *spec.optional_inputs):
            p.add_argument("--" + input_name.replace("_", "-"), dest=f"in_{input_name}", metavar="FILE",
                           required=input_name in spec.inputs, help=spec.input_help.get(input_name))
        p.add_argument("--config", metavar="FILE", help="YAML or JSON mapping of config fields")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                       help="set one config field (repeatable)")
        p.add_argument("--out", metavar="FILE", help="write the plan JSON here")
        p.add_argument("--json", action="store_true", help="print the plan JSON on stdout instead of the summary")
        p.add_argument("--save", action="store_true",
                       help="also store the plan in the run history ($QFLOW_HOME/runs.db, default ~/.qflow/runs.db)")
        _add_config_flags(p, spec.config_cls)
    sample = sub.add_parser("sample", help="write the bundled sample inputs of every module")
    sample.add_argument("directory", nargs="?", default="sample_data")
    sample.add_argument("--seed", type=int, default=0)
    app = sub.add_parser("app", help="start the operator console (Streamlit) on http://localhost:PORT")
    app.add_argument("--port", type=int, default=8501)
    serve = sub.add_parser("serve", help="start the HTTP API (FastAPI, uvicorn) on http://127.0.0.1:PORT (docs at /docs)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    return parser


def _config_from_args(args: argparse.Namespace, spec: ModuleCommand) -> QflowConfig:
    values: dict[str, Any] = {}
    source = "arguments"
    if args.config:
        source = Path(args.config).name
        values.update(load_mapping(args.config))
    for name in spec.config_cls.model_fields:
        flag_value = getattr(args, f"cfg_{name}")
        if flag_value is not None:
            values[name] = flag_value
    for item in args.overrides:
        if "=" not in item:
            raise InputError("--set", item, "not NAME=VALUE", "NAME=VALUE, e.g. capacity_factor=1.5", item)
        key, text = item.split("=", 1)
        values[key.strip()] = parse_scalar(text.strip(), "--set", key.strip())
    return spec.config_cls.from_mapping(values, source)


def _run_module(args: argparse.Namespace) -> int:
    spec = load_command(args.command)
    config = _config_from_args(args, spec)
    files = {name: (Path(value) if (value := getattr(args, f"in_{name}")) else None)
             for name in (*spec.inputs, *spec.optional_inputs)}
    plan = spec.run(files, config, Path(args.out) if args.out else None)
    text = plan.to_json()
    plan_out = None
    if args.out:
        plan_out = spec.plan_path(Path(args.out)) if spec.plan_path else Path(args.out)
        plan_out.write_text(text + "\n")
    run_id = _save_plan(plan) if args.save else None
    if args.json:
        print(text)
        if run_id is not None:
            print(f"saved as run {run_id}", file=sys.stderr)
        return 0
    solver = plan.solver
    print(f"qflow {spec.name}: requested {solver.requested}, ran {solver.ran}")
    for fb in solver.fallbacks:
        print(f"  fallback {fb.from_} -> {fb.to}: {fb.reason}")
    for line in spec.summarize(plan):
        print(line)
    for note in plan.diagnostics:
        print(f"  note: {note}")
    print(f"  time: {sum(plan.timings_s.values()):.2f} s" + (f"; plan written to {plan_out}" if plan_out else ""))
    if run_id is not None:
        print(f"  saved as run {run_id} in the run history")
    return 0


def _save_plan(plan: Any) -> int:
    """Store ``plan`` in the run history (``--save``); returns its run id."""
    from qflow.core.runs import RunStore

    return RunStore().save(plan, origin="cli")


def _run_serve(host: str, port: int) -> int:
    """The HTTP API under uvicorn until interrupted."""
    import uvicorn

    uvicorn.run("qflow.api:app", host=host, port=port, log_level="info")
    return 0


def _run_app(port: int) -> int:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    app = root / "app.py"
    if not app.is_file():
        raise InputError("app.py", "(file)", "not found", "a source checkout with app.py beside the qflow package", str(app))
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true", "--server.port", str(port)]
    return subprocess.call(cmd, cwd=root)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qflow`` / ``python -m qflow``; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sample":
            from qflow.samples import write_samples

            for path in write_samples(args.directory, seed=args.seed):
                print(path)
            return 0
        if args.command == "app":
            return _run_app(args.port)
        if args.command == "serve":
            return _run_serve(args.host, args.port)
        return _run_module(args)
    except QflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so, one line unless debugging
        print(f"internal error (a bug in qflow): {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("QFLOW_DEBUG"):
            traceback.print_exc()
        else:
            print("  rerun with QFLOW_DEBUG=1 for the traceback", file=sys.stderr)
        return 1
