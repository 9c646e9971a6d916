"""Command line: ``python -m qflow MODULE --INPUT FILE ... [options]``.

A thin adapter: flags become the module's config, files go through the
module's loaders, the plan is written as JSON. Exit codes: 0 done, 2 bad
input or infeasible instance (one ``error: ...`` line on stderr), 1 a bug.
A malformed environment variable, or an ``--out`` that cannot be written
(missing folder, no permission), is exit 2 before any work starts. Warnings
libraries raise during a run are printed after the summary (or after the
``error:`` line), one line each, never before it.

``app`` and ``serve`` listen on 127.0.0.1 unless ``--host`` says otherwise;
beyond loopback they refuse to start without a token
(:mod:`qflow.core.access`). SIGTERM stops either, and ``app`` stops its
Streamlit child with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from qflow._version import __version__
from qflow.core.commands import ModuleCommand, available_commands, load_command
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError, QflowError
from qflow.core.io import load_mapping, parse_scalar
from qflow.core.limits import validate_environment

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


def _build_parser(only: ModuleCommand | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, that module's subcommand alone among the modules.

    ``only`` is for a command line that names a module first: its parse is the
    same, and the other modules' packages are not imported just to be listed.
    """
    parser = argparse.ArgumentParser(
        prog="qflow",
        description="QuantumFlow: planning engine for GPU clusters. Each module reads its input files and writes a JSON plan.",
    )
    parser.add_argument("--version", action="version", version=f"qflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in [only] if only is not None else available_commands():
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        _add_input_flags(p, spec)
        p.add_argument("--out", metavar="FILE", help="write the plan JSON here")
        p.add_argument("--json", action="store_true", help="print the plan JSON on stdout instead of the summary")
        p.add_argument("--save", action="store_true",
                       help="also store the plan in the run history ($QFLOW_HOME/runs.db, default ~/.qflow/runs.db)")
        _add_config_flags(p, spec.config_cls)
    sample = sub.add_parser("sample", help="write the bundled sample inputs of every module")
    sample.add_argument("directory", nargs="?", default="sample_data")
    sample.add_argument("--seed", type=int, default=0)
    app = sub.add_parser("app", help="start the operator console (Streamlit) on http://127.0.0.1:PORT")
    app.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default: 127.0.0.1, this machine only; beyond it a login is required)")
    app.add_argument("--port", type=int, default=8501)
    serve = sub.add_parser("serve", help="start the HTTP API (FastAPI, uvicorn) on http://127.0.0.1:PORT (docs at /docs)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default: 127.0.0.1, this machine only; beyond it QFLOW_API_TOKEN "
                            "is required)")
    serve.add_argument("--port", type=int, default=8000)
    if only is None:
        _add_advise_parser(sub)
        _add_train_parser(sub)
    return parser


def _add_input_flags(p: argparse.ArgumentParser, spec: ModuleCommand) -> None:
    """``--INPUT FILE`` per engine input, then ``--config`` and repeatable ``--set``."""
    for input_name in (*spec.inputs, *spec.optional_inputs):
        p.add_argument("--" + input_name.replace("_", "-"), dest=f"in_{input_name}", metavar="FILE",
                       required=input_name in spec.inputs, help=spec.input_help.get(input_name))
    p.add_argument("--config", metavar="FILE", help="YAML or JSON mapping of config fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="set one config field (repeatable)")


def _add_advise_parser(sub: Any) -> None:
    """``qflow advise MODULE --INPUT FILE ... [--goal G] [--budget-s S]``: one nested subcommand per advised module."""
    from qflow.advisor._rules import PRIMARY_METRICS

    advise = sub.add_parser("advise", help="recommend settings for a module by measuring candidates on the inputs")
    modules = advise.add_subparsers(dest="advise_module", metavar="MODULE", required=True)
    for spec in available_commands():
        if spec.name not in PRIMARY_METRICS:
            continue
        p = modules.add_parser(spec.name, help=spec.help)
        _add_input_flags(p, spec)
        p.add_argument("--goal", choices=("quality", "speed", "balanced"), default="balanced")
        p.add_argument("--budget-s", type=float, default=60.0, metavar="SECONDS",
                       help="stop launching candidates after this much wall time (default: 60)")
        p.add_argument("--out", metavar="FILE", help="write the advice plan JSON here")
        p.add_argument("--json", action="store_true", help="print the advice plan JSON instead of the summary")
        _add_config_flags(p, spec.config_cls)


def _add_train_parser(sub: Any) -> None:
    """``qflow train KIND --INPUT FILE ... [--out model.safetensors]``: one nested subcommand per trainable part."""
    from qflow.core.models import available_trainers

    train = sub.add_parser("train", help="train a module's learned part on your data and write a reusable model (.safetensors + card)")
    kinds = train.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    for trainer in available_trainers():
        p = kinds.add_parser(trainer.name, help=trainer.help, description=trainer.help)
        _add_input_flags(p, trainer)  # type: ignore[arg-type]  # a Trainer has the input fields a command has
        p.add_argument("--out", metavar="FILE", help="the model file (.safetensors; the card goes beside it as .card.json); "
                                                     "default: $QFLOW_HOME/models/KIND-TIME.safetensors")
        _add_config_flags(p, trainer.config_cls)


def _run_train(args: argparse.Namespace, caught: list[warnings.WarningMessage]) -> int:
    """Train, write the model and its card, print where and the card's figures."""
    import datetime as dt

    from qflow.core.models import load_trainer, models_dir

    validate_environment()
    trainer = load_trainer(args.train_kind)
    config = _config_from_args(args, trainer)  # type: ignore[arg-type]
    if args.out:
        out = Path(args.out)
        if out.suffix != ".safetensors":
            raise InputError("--out", str(out), "a model is written as safetensors", "a name ending in .safetensors", out.suffix or "none")
        _check_out_writable(out, trainer)  # type: ignore[arg-type]
    else:
        folder = models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{trainer.name}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}.safetensors"
    files = {name: (Path(value) if (value := getattr(args, f"in_{name}")) else None) for name in (*trainer.inputs, *trainer.optional_inputs)}
    card = trainer.train(files, config).save(out, trainer.name)
    print(f"qflow train {trainer.name}: wrote {out} (card sha256 {card['card_sha256'][:12]}, format {card['format_version']})")
    for key, value in card["metrics"].items():
        print(f"  {key}: {value}")
    print(f"  reuse it: python -m qflow {card['module']} ... --model {out}")
    _print_warnings(caught)
    return 0


def _prepare_run(args: argparse.Namespace, spec: ModuleCommand) -> tuple[QflowConfig, dict[str, Path | None]]:
    """The config and the input paths of a command line, checked (environment, ``--out``) before any work."""
    validate_environment()
    config = _config_from_args(args, spec)
    if args.out:
        _check_out_writable(Path(args.out), spec)
    files = {name: (Path(value) if (value := getattr(args, f"in_{name}")) else None)
             for name in (*spec.inputs, *spec.optional_inputs)}
    return config, files


def _run_advise(args: argparse.Namespace, caught: list[warnings.WarningMessage]) -> int:
    """Measure the candidates, print the recommendation (or the plan JSON); exit codes as for a module."""
    from qflow.advisor import plan_advice

    spec = load_command(args.advise_module)
    config, files = _prepare_run(args, spec)
    plan = plan_advice(spec.name, files, config, goal=args.goal, budget_s=args.budget_s)
    if args.out:
        Path(args.out).write_text(plan.to_json() + "\n")
    if args.json:
        print(plan.to_json())
    else:
        result = plan.result
        print(f"qflow advise {spec.name} (goal {args.goal}): recommended {result['recommended_candidate']}"
              f" changes {result['changes'] or 'nothing'}")
        for row in result["candidates"]:
            print(f"  #{row['rank']} {row['name']}: {result['primary_metric']['metric']} {row['quality']}, "
                  f"{row['seconds']:.2f} s" + (f" ({row['rule']})" if row["rule"] else ""))
        for rule in result["rules"]:
            print(f"  rule {rule['row']!r}: matched {rule['matched']}, agreed {rule['agreed']}")
        for row in result["skipped"]:
            print(f"  skipped (budget): {row}")
    _print_warnings(caught)
    return 0


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


def _check_out_writable(out: Path, spec: ModuleCommand) -> None:
    """An :class:`InputError` unless ``out`` (and the plan file beside it) can be written; nothing is created."""
    targets = [out] + ([spec.plan_path(out)] if spec.plan_path else [])
    for target in targets:
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise InputError("--out", str(out), "its folder does not exist", "a file in an existing folder", str(folder))
        if target.is_dir():
            raise InputError("--out", str(out), "is a folder", "a file path", str(target))
        writable = os.access(target, os.W_OK) if target.exists() else os.access(folder, os.W_OK | os.X_OK)
        if not writable:
            raise InputError("--out", str(out), "not writable (permission denied)", "a path this user may write",
                             str(target))


@contextmanager
def _warnings_held() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings raised inside (printed later by the caller, after its result or ``error:`` line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    seen = set()
    for item in caught:
        line = f"warning: {item.category.__name__}: {' '.join(str(item.message).split())}"
        if line not in seen:
            seen.add(line)
            print(line[:300], file=sys.stderr)


def _run_module(args: argparse.Namespace, caught: list[warnings.WarningMessage]) -> int:
    spec = load_command(args.command)
    config, files = _prepare_run(args, spec)
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
        _print_warnings(caught)
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
    sys.stdout.flush()
    _print_warnings(caught)
    return 0


def _save_plan(plan: Any) -> int:
    """Store ``plan`` in the run history (``--save``); returns its run id."""
    from qflow.core.runs import RunStore

    return RunStore().save(plan, origin="cli")


def _require_login_beyond_loopback(host: str, what: str, console: bool = False) -> None:
    """Refuse to listen beyond loopback without a token (or, for the console, OIDC login settings)."""
    from qflow.core.access import configured_token, is_loopback

    if is_loopback(host) or configured_token() is not None or (console and _oidc_configured()):
        return
    other = " or an [auth] section in .streamlit/secrets.toml (OIDC login)" if console else ""
    raise InputError("--host", host, f"{what} would listen beyond loopback with no login",
                     f"QFLOW_API_TOKEN or QFLOW_API_TOKEN_FILE set{other}, or --host 127.0.0.1", host)


def _oidc_configured() -> bool:
    """Whether a Streamlit secrets file (the checkout's or the user's) has an ``[auth]`` section for ``st.login``."""
    import tomllib

    for path in (Path(__file__).resolve().parent.parent / ".streamlit" / "secrets.toml",
                 Path.home() / ".streamlit" / "secrets.toml"):
        try:
            if "auth" in tomllib.loads(path.read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
    return False


def _run_serve(host: str, port: int) -> int:
    """The HTTP API under uvicorn until interrupted (SIGTERM or Ctrl-C: in-flight runs are cancelled)."""
    from qflow.core.access import allowed_hosts, is_loopback, validate_server_environment

    validate_server_environment()
    _require_login_beyond_loopback(host, "the API")
    import uvicorn

    from qflow.api import create_app

    if not is_loopback(host) and all(is_loopback(name) for name in allowed_hosts()):
        print("note: QFLOW_ALLOWED_HOSTS holds loopback names only: requests naming this machine otherwise get 400",
              file=sys.stderr)
    uvicorn.run(create_app(bound_host=host), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line of ``qflow app`` (listening on ``host``:``port``)."""
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
            "--server.address", host, "--server.port", str(port)]


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when its parent dies (even by kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_app(host: str, port: int) -> int:
    """The console (Streamlit) as a child process; SIGTERM, SIGHUP and Ctrl-C stop it with this process."""
    from qflow.core.access import validate_server_environment
    from qflow.core.uploads import sweep_stale_upload_folders

    root = Path(__file__).resolve().parent.parent
    app = root / "app.py"
    if not app.is_file():
        raise InputError("app.py", "(file)", "not found", "a source checkout with app.py beside the qflow package", str(app))
    validate_server_environment()
    _require_login_beyond_loopback(host, "the console", console=True)
    sweep_stale_upload_folders()
    child = subprocess.Popen(streamlit_command(app, host, port), cwd=root,
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509

    def stop(signum: int, _frame: Any) -> None:
        child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            return child.wait()
        except KeyboardInterrupt:  # the terminal's Ctrl-C reached the child too; give it time to stop
            child.send_signal(signal.SIGTERM)
            raise
    finally:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _module_named_first(argv: Sequence[str]) -> ModuleCommand | None:
    """The module command ``argv`` starts with, or ``None`` (an option, ``sample``, a typo: the full parser)."""
    if not argv or argv[0].startswith("-") or argv[0] in ("sample", "app", "serve", "train", "advise"):
        return None
    try:
        return load_command(argv[0])
    except KeyError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qflow`` / ``python -m qflow``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser(_module_named_first(argv))
    args = parser.parse_args(argv)
    servers = args.command in ("app", "serve")  # long-running: their warnings go to the log as they come
    with nullcontext([]) if servers else _warnings_held() as caught:
        try:
            if args.command == "sample":
                from qflow.samples import write_samples

                for path in write_samples(args.directory, seed=args.seed):
                    print(path)
                return 0
            if args.command == "app":
                return _run_app(args.host, args.port)
            if args.command == "serve":
                return _run_serve(args.host, args.port)
            if args.command == "advise":
                return _run_advise(args, caught)
            if args.command == "train":
                return _run_train(args, caught)
            return _run_module(args, caught)
        except QflowError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            _print_warnings(caught)
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
            _print_warnings(caught)
            return 1
