"""The server-side data folder: only files under it are listed or opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from qflow.core.datadir import data_dir, list_data_files, resolve_data_file
from qflow.core.errors import InputError


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "model.safetensors").write_bytes(b"x")
    (root / "ckpt" / "model.safetensors.index.json").write_text("{}")
    (root / "notes.txt").write_text("n")
    (root / ".hidden").write_text("h")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"s")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.safetensors").write_bytes(b"w")
    (root / "link_out.safetensors").symlink_to(outside)
    (root / "dir_out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "link_in.safetensors").symlink_to(root / "ckpt" / "model.safetensors")
    return root


def test_lists_only_files_inside(folder: Path) -> None:
    assert list_data_files(folder) == ["ckpt/model.safetensors", "ckpt/model.safetensors.index.json",
                                       "link_in.safetensors", "notes.txt"]
    assert list_data_files(folder, (".SAFETENSORS",)) == ["ckpt/model.safetensors", "link_in.safetensors"]


def test_resolve_refuses_names_leaving_the_folder(folder: Path) -> None:
    assert resolve_data_file(folder, "ckpt/model.safetensors") == folder / "ckpt" / "model.safetensors"
    assert resolve_data_file(folder, "ckpt") == folder / "ckpt"  # a sharded checkpoint's folder
    for name, problem in (("../secret.safetensors", "not a name inside"), ("/etc/passwd", "not a name inside"),
                          ("link_out.safetensors", "leads outside"), ("dir_out/w.safetensors", "leads outside"),
                          ("missing.bin", "not found"), ("", "not a name inside")):
        with pytest.raises(InputError, match=problem):
            resolve_data_file(folder, name)


def test_data_dir_from_the_environment(folder: Path) -> None:
    assert data_dir({}) is None
    assert data_dir({"QFLOW_DATA_DIR": str(folder)}) == folder
    with pytest.raises(InputError, match="QFLOW_DATA_DIR.*not a folder"):
        data_dir({"QFLOW_DATA_DIR": str(folder / "notes.txt")})
