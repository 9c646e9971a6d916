"""The CLI's contract around its own output: an unwritable ``--out`` is exit 2 with one line before any work,
library warnings never come before the ``error:`` line, and a malformed limit variable is one line too."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

import qflow.cli as cli
from qflow.core.commands import load_command
from qflow.core.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "sample_data" / "hpo" / "space.yaml"


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("case", ["missing folder", "folder is a file", "out is a folder"])
def test_unwritable_out_is_exit_2_before_the_engine_runs(tmp_path: Path, case: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    out = {"missing folder": tmp_path / "no" / "such" / "plan.json",
           "folder is a file": tmp_path / "file" / "plan.json",
           "out is a folder": tmp_path}[case]
    bad_input = tmp_path / "space.yaml"
    bad_input.write_text("not: [a, space")  # the engine would fail on this: the --out check must come first
    assert cli.main(["hpo", "--space", str(bad_input), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: --out: {out}: "), line
    assert not (tmp_path / "no").exists()


def test_unwritable_plan_beside_a_compress_artifact_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_command("compress")
    if spec.plan_path is None:
        pytest.skip("compress writes its plan at --out itself")
    out = tmp_path / "model.qfz"
    spec.plan_path(out).mkdir()  # where the plan JSON would go is a folder
    checkpoint = ROOT / "sample_data" / "compression" / "checkpoint.safetensors"
    assert cli.main(["compress", "--input", str(checkpoint), "--out", str(out)]) == 2
    assert _error_line(capsys).startswith(f"error: --out: {out}: is a folder")
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert cli.main(["hpo", "--space", str(SPACE), "--out", str(folder / "plan.json")]) == 2
        assert "not writable (permission denied)" in _error_line(capsys)
    finally:
        folder.chmod(0o755)


def test_library_warnings_come_after_the_error_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    real = load_command("hpo")

    def noisy_run(files: object, config: object, out: object = None) -> None:
        warnings.warn("a library's deprecation notice", DeprecationWarning, stacklevel=1)
        warnings.warn("overflow encountered in exp", RuntimeWarning, stacklevel=1)
        raise InputError("space.yaml", "params.lr", "low above high", "low <= high", "1 > 0")

    monkeypatch.setattr(cli, "load_command", lambda name: real.__class__(**{**real.__dict__, "run": noisy_run}))
    assert cli.main(["hpo", "--space", str(SPACE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: space.yaml: params.lr: low above high; expected low <= high, got 1 > 0"
    assert err[1:] == ["warning: DeprecationWarning: a library's deprecation notice",
                       "warning: RuntimeWarning: overflow encountered in exp"]


def test_malformed_limit_variable_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QFLOW_MAX_INPUT_MB", "1e999")
    assert cli.main(["hpo", "--space", str(SPACE)]) == 2
    assert _error_line(capsys).startswith("error: QFLOW_MAX_INPUT_MB: (environment): not a usable number")
