"""Model artifacts: bit-exact round trip, and every tampered or foreign file refused in one line naming the file and field."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import numpy as np
import pytest

from qflow.core.errors import InputError
from qflow.core.models import FORMAT_VERSION, card_path, list_models, load_model, model_bytes, save_model, weights_digest

TENSORS = {
    "w": np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32),
    "b": np.array([1e-30, -0.0, np.pi], dtype=np.float64),
    "idx": np.arange(7, dtype=np.int64),
}
CARD = {"config": {"seed": 3}, "inputs": [{"name": "telemetry", "sha256": "ab" * 32}], "metrics": {"mae_w": 1.5},
        "spec": {"width": 5}}


def _save(tmp_path, kind="contrastive", name="m.safetensors"):
    path = tmp_path / name
    card = save_model(path, kind, TENSORS, **CARD)
    return path, card


def _rewrite(path, edit) -> None:
    """Rewrite the file's header JSON through ``edit(header)`` (the data bytes stay as they are)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def _forge_card(path, **changes) -> None:
    """Change card fields and store the card with a freshly computed ``qflow.card_sha256`` (a forger's edit)."""

    def edit(header):
        card = json.loads(header["__metadata__"]["qflow.card"])
        card.update(changes)
        text = json.dumps(card, sort_keys=True, separators=(",", ":"))
        header["__metadata__"].update({"qflow.card": text, "qflow.card_sha256": hashlib.sha256(text.encode()).hexdigest()})

    _rewrite(path, edit)


def _one_line(exc: pytest.ExceptionInfo, file: str, field: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{file}: {field}"), message


def test_round_trip_is_bit_exact_and_the_card_says_what_it_holds(tmp_path) -> None:
    path, card = _save(tmp_path)
    model = load_model(path, "contrastive")
    assert set(model.tensors) == set(TENSORS)
    for key, value in TENSORS.items():
        assert model.tensors[key].dtype == value.dtype and model.tensors[key].tobytes() == value.tobytes()
    assert model.card["format_version"] == FORMAT_VERSION and model.card["kind"] == "contrastive" and model.card["module"] == "attention"
    assert model.card["inputs"] == CARD["inputs"] and model.card["config"] == CARD["config"] and model.card["spec"] == {"width": 5}
    assert model.card["weights_sha256"] == weights_digest(TENSORS) and model.card["qflow_version"]
    assert model.card_sha256 == card["card_sha256"]
    sidecar = json.loads(card_path(path).read_text())
    assert sidecar["card_sha256"] == card["card_sha256"] and sidecar["weights_file"] == "m.safetensors"
    described = model.describe()
    assert described["trained"] == "no, loaded" and described["card_sha256"] == card["card_sha256"]


def test_the_same_model_gives_the_same_bytes_apart_from_the_time() -> None:
    a, card_a = model_bytes("contrastive", TENSORS, **CARD)
    b, card_b = model_bytes("contrastive", dict(reversed(TENSORS.items())), **CARD)
    assert card_a["weights_sha256"] == card_b["weights_sha256"]


def test_a_tampered_card_digest_is_refused(tmp_path) -> None:
    path, _ = _save(tmp_path)
    _rewrite(path, lambda h: h["__metadata__"].update({"qflow.card_sha256": "0" * 64}))
    with pytest.raises(InputError, match="does not match its digest") as exc:
        load_model(path, "contrastive")
    _one_line(exc, "m.safetensors", "model.card_sha256")


def test_an_edited_card_with_a_recomputed_digest_still_fails_on_the_weights_or_the_kind(tmp_path) -> None:
    path, _ = _save(tmp_path)

    _forge_card(path, weights_sha256="f" * 64)
    with pytest.raises(InputError, match="weights do not match") as exc:
        load_model(path, "contrastive")
    _one_line(exc, "m.safetensors", "model.weights_sha256")


def test_changed_weight_bytes_are_refused(tmp_path) -> None:
    path, _ = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as exc:
        load_model(path, "contrastive")
    _one_line(exc, "m.safetensors", "model.weights_sha256")


def test_a_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path) -> None:
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(InputError, match="not a safetensors file") as exc:
        load_model(path, "contrastive")
    _one_line(exc, "evil.safetensors", "model")


def test_other_suffixes_plain_safetensors_kinds_and_versions_are_refused(tmp_path) -> None:
    path, _ = _save(tmp_path)
    other = tmp_path / "m.pt"
    other.write_bytes(path.read_bytes())
    with pytest.raises(InputError, match="safetensors only") as exc:
        load_model(other, "contrastive")
    _one_line(exc, "m.pt", "model")
    with pytest.raises(InputError, match="another kind") as exc:
        load_model(path, "power-model")
    _one_line(exc, "m.safetensors", "model.kind")
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(plain))
    with pytest.raises(InputError, match="no qflow model card"):
        load_model(plain, "contrastive")

    _forge_card(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(InputError, match="unsupported model format") as exc:
        load_model(path, "contrastive")
    _one_line(exc, "m.safetensors", "model.format_version")


def test_models_are_listed_from_their_cards(tmp_path) -> None:
    _save(tmp_path, "contrastive", "a.safetensors")
    _save(tmp_path, "power-model", "b.safetensors")
    (tmp_path / "junk.card.json").write_text("{not json")
    rows = list_models(tmp_path)
    assert sorted(r["kind"] for r in rows) == ["contrastive", "power-model"] and all(r["exists"] for r in rows)
    assert list_models(tmp_path / "missing") == []


def test_damaged_model_files_are_input_errors_never_crashes(tmp_path) -> None:
    path, _ = _save(tmp_path)
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(300):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            model = load_model(path, "contrastive")
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("m.safetensors: model")
            refused += 1
        else:  # a change that left everything checked intact (JSON whitespace, say) loads the same weights
            assert all(model.tensors[k].tobytes() == v.tobytes() for k, v in TENSORS.items())
    assert refused > 250
