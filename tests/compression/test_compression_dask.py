"""Compress and decompress on a real Dask cluster: shards as tasks, the same container and files as a local run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from qflow.cli import main
from qflow.compression import compress_tensors
from qflow.compression._checkpoint import open_checkpoint
from qflow.compression._distributed import tensor_groups
from qflow.core.errors import InputError


def _checkpoint(folder: Path, shards: int = 3, rows: int = 64, seed: int = 0) -> Path:
    """A sharded float32 checkpoint (two tensors per shard, one int table) and its index."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {f"layers.{s}.weight": (rng.normal(size=(rows, 96)) * 0.05).astype(np.float32),
                   f"layers.{s}.bias": (rng.normal(size=(96,)) * 0.01).astype(np.float32)}
        if s == 0:
            tensors["embed.ids"] = rng.integers(0, 500, size=(40,)).astype(np.int32)
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def _workers(address: str) -> set[str]:
    from distributed import Client

    with Client(address, timeout="10s", set_as_default=False) as client:
        return set(client.scheduler_info(n_workers=-1)["workers"])


def _compress(ckpt: Path, out: Path, *flags: str) -> dict:
    assert main(["compress", "--input", str(ckpt), "--out", str(out), *flags]) == 0
    return json.loads(out.with_name(out.name + ".plan.json").read_text())


def _decompress(container: Path, out: Path, *flags: str) -> dict:
    assert main(["decompress", "--input", str(container), "--out", str(out), *flags]) == 0
    return json.loads(out.with_name(out.name + ".plan.json").read_text())


def test_tensor_groups_split_at_files_and_size():
    assert tensor_groups(["a", "a", "b", "b"], [5, 5, 5, 5], limit=100) == [[0, 1], [2, 3]]
    assert tensor_groups(["a"] * 4, [60] * 4, limit=100) == [[0, 1], [2, 3]]
    assert tensor_groups(["a"] * 3, [200] * 3, limit=100) == [[0], [1], [2]]


@pytest.mark.parametrize("flags", [(), ("--lossless",), ("--bits", "4", "--set", "target_sparsity=0.3")])
def test_sharded_compress_on_the_cluster_is_the_local_container(tmp_path, dask_cluster, flags):
    ckpt = _checkpoint(tmp_path / "ckpt")
    local = _compress(ckpt, tmp_path / "local.qfz", *flags)
    remote = _compress(ckpt, tmp_path / "dask.qfz", *flags, "--dask-scheduler", dask_cluster.address)
    assert (tmp_path / "dask.qfz").read_bytes() == (tmp_path / "local.qfz").read_bytes()
    assert _same_rows(remote, local)
    cluster = remote["result"]["cluster"]
    assert cluster["scheduler"] == dask_cluster.address
    assert set(cluster["workers_used"]) <= _workers(dask_cluster.address)
    # one task per shard, in shard order, each naming the worker that encoded it
    assert [t["shard"] for t in cluster["tasks"]] == [f"model-{s:05d}-of-00003.safetensors" for s in (1, 2, 3)]
    assert all(t["worker"].startswith("tcp://127.0.0.1:") for t in cluster["tasks"])
    assert "cluster" not in local["result"]
    assert remote["config"]["dask_scheduler"] == dask_cluster.address


def _same_rows(a: dict, b: dict) -> bool:
    """Per-tensor rows equal apart from nothing: the error figures come from the same encoded blocks."""
    keys = ("name", "scheme", "stored_bytes", "relative_l2_error")
    return [{k: r[k] for k in keys} for r in a["result"]["tensors"]] == \
        [{k: r[k] for k in keys} for r in b["result"]["tensors"]]


def test_decompress_on_the_cluster_writes_the_local_files(tmp_path, dask_cluster):
    ckpt = _checkpoint(tmp_path / "ckpt")
    _compress(ckpt, tmp_path / "model.qfz", "--bits", "4")
    _decompress(tmp_path / "model.qfz", tmp_path / "local")
    plan = _decompress(tmp_path / "model.qfz", tmp_path / "remote", "--dask-scheduler", dask_cluster.address)
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "remote").iterdir())
    assert "model.safetensors.index.json" in names
    for name in names:
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    tasks = plan["result"]["cluster"]["tasks"]
    assert sorted(t["file"] for t in tasks) == sorted(n for n in names if not n.endswith(".json"))
    assert {t["worker"] for t in tasks} <= _workers(dask_cluster.address)


def test_one_large_file_is_split_into_tensor_groups(tmp_path, dask_cluster, monkeypatch):
    monkeypatch.setattr("qflow.compression._distributed.GROUP_BYTES", 10_000)
    ckpt = _checkpoint(tmp_path / "ckpt", shards=2)
    _decompress_target = tmp_path / "merged.safetensors"
    _compress(ckpt, tmp_path / "model.qfz", "--lossless")
    # one merged output file, filled by several tasks at their offsets
    plan = _decompress(tmp_path / "model.qfz", _decompress_target, "--dask-scheduler", dask_cluster.address)
    assert len(plan["result"]["cluster"]["tasks"]) > 1
    assert {t["file"] for t in plan["result"]["cluster"]["tasks"]} == {"merged.safetensors"}
    _decompress(tmp_path / "model.qfz", tmp_path / "local.safetensors")
    assert _decompress_target.read_bytes() == (tmp_path / "local.safetensors").read_bytes()
    # and compressing that single file on the cluster takes several tasks too, same container
    local = _compress(_decompress_target, tmp_path / "one-local.qfz")
    remote = _compress(_decompress_target, tmp_path / "one-dask.qfz", "--dask-scheduler", dask_cluster.address)
    assert len(remote["result"]["cluster"]["tasks"]) > 1
    assert (tmp_path / "one-dask.qfz").read_bytes() == (tmp_path / "one-local.qfz").read_bytes()
    assert local["metrics"]["container_bytes"] == remote["metrics"]["container_bytes"]


def test_a_damaged_block_found_on_a_worker_is_the_local_error_and_leaves_no_files(tmp_path, dask_cluster, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt")
    _compress(ckpt, tmp_path / "model.qfz", "--lossless")
    data = bytearray((tmp_path / "model.qfz").read_bytes())
    data[200] ^= 0xFF  # inside the first blocks, past the fixed preamble
    (tmp_path / "model.qfz").write_bytes(bytes(data))
    capsys.readouterr()
    code = main(["decompress", "--input", str(tmp_path / "model.qfz"), "--out", str(tmp_path / "restored"),
                 "--dask-scheduler", dask_cluster.address])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "checksum mismatch" in err[0] and "Traceback" not in err[0]
    assert not list((tmp_path / "restored").glob("*.safetensors"))


def test_a_path_the_workers_cannot_see_is_one_line_error(tmp_path, dask_cluster):
    ckpt = _checkpoint(tmp_path / "ckpt")
    checkpoint = open_checkpoint(ckpt)
    ckpt.rename(tmp_path / "elsewhere")  # gone from the path the workers were told
    with pytest.raises(InputError, match=r"dask_scheduler: path not visible to worker tcp://127\.0\.0\.1:\d+.*shares"):
        compress_tensors(checkpoint, {"dask_scheduler": dask_cluster.address}, source="ckpt")


def test_in_memory_tensors_fall_back_to_threads_with_the_reason():
    arrays = {"w": np.ones((8, 8), np.float32)}
    run = compress_tensors(arrays, {"dask_scheduler": "tcp://127.0.0.1:1"})  # never contacted
    assert [f.model_dump(by_alias=True)["from"] for f in run.plan.solver.fallbacks] == ["dask"]
    assert "no path the workers could read" in run.plan.solver.fallbacks[0].reason
    assert "cluster" not in run.plan.result


def test_killing_a_worker_mid_compress_loses_nothing(tmp_path):
    import os

    from distributed import Client

    from tests.dask_cluster import start_cluster

    ckpt = _checkpoint(tmp_path / "ckpt", shards=6, rows=1024)
    local = compress_tensors(open_checkpoint(ckpt), {"bits": 4}).container
    (tmp_path / "dask").mkdir()
    cluster = start_cluster(tmp_path / "dask", n_workers=2)
    killed: list[str] = []
    try:
        with Client(cluster.address, timeout="10s", set_as_default=False) as client:
            pids = client.run(os.getpid)

            def kill_a_busy_worker(fraction: float, message: str) -> None:
                """After the first shard is written: SIGKILL a worker that is running a task now."""
                if not message.startswith("compressed") or killed:
                    return
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    killed.append(busy[0])
                    cluster.kill_worker([p.pid for p in cluster.workers].index(pids[busy[0]]))

            run = compress_tensors(open_checkpoint(ckpt), {"bits": 4, "dask_scheduler": cluster.address},
                                   progress=kill_a_busy_worker)
            survivors = set(client.scheduler_info(n_workers=-1)["workers"])
    finally:
        cluster.close()
    assert killed, "no worker was running a task after the first shard"
    assert survivors == set(pids) - set(killed)
    assert run.container == local  # the killed worker's task was rerun on the survivor
    tasks = run.plan.result["cluster"]["tasks"]
    assert len(tasks) == 6
    assert survivors <= set(run.plan.result["cluster"]["workers_used"])
