"""Trained model artifacts: ``.safetensors`` weights with a JSON card inside, plus the card beside them.

``python -m qflow train KIND`` trains one learned part of a module on the
user's data and writes it with :func:`save_model`; a plan given the file as
its optional ``model`` input loads it with :func:`load_model` and reuses it
instead of training. One file carries everything a plan checks, so the API
and the console take it as one upload:

* the tensors (float or integer arrays, names chosen by the module);
* ``__metadata__["qflow.card"]``: the card, canonical JSON: ``format_version``,
  ``kind``, ``qflow_version``, ``created_at``, ``inputs`` (name, sha256,
  size of each training input), ``config``, ``metrics``, ``spec`` (what the
  plan checks the model against, e.g. widths and node ids), ``tensors``
  (name -> dtype and shape) and ``weights_sha256`` (a digest of the tensors:
  names, dtypes, shapes and bytes, in name order);
* ``__metadata__["qflow.card_sha256"]``: the digest of the card text.

Loading refuses, each as one :class:`~qflow.core.errors.InputError` naming
the file and the field: another suffix, bytes that are not safetensors (a
pickle renamed ``.safetensors`` among them; nothing is unpickled), a card
whose digest or whose tensors' digest does not match, another format
version, another kind, and tensors whose names, dtypes or shapes differ
from the card. ``<name>.card.json`` beside the weights is a copy of the card
for people and for the console's model list; the plan never reads it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qflow._version import __version__
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.io import RawInput, Source, read_input

__all__ = ["FORMAT_VERSION", "MODEL_KINDS", "ModelArtifact", "TrainedModel", "Trainer", "available_trainers", "card_path", "check_spec", "digest_list",
           "list_models", "load_model", "load_trainer", "model_digest", "model_bytes", "models_dir", "save_model", "weights_digest"]

#: Version of the artifact layout; a file of another version is refused.
FORMAT_VERSION = 1
#: What ``qflow train`` trains: kind -> the module whose plan reuses it.
MODEL_KINDS = {"power-model": "energy", "contention-classifier": "nvlink", "denoiser": "compress", "contrastive": "attention"}
CARD_KEY, CARD_DIGEST_KEY = "qflow.card", "qflow.card_sha256"


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded, checked model: its tensors, its card and where it came from."""

    kind: str
    tensors: dict[str, np.ndarray]
    card: dict[str, Any]
    card_sha256: str
    source: str

    def describe(self) -> dict[str, Any]:
        """What a plan records about the model it reused."""
        return {"file": self.source, "kind": self.kind, "card_sha256": self.card_sha256, "trained": "no, loaded",
                "trained_at": self.card.get("created_at"), "qflow_version": self.card.get("qflow_version"),
                "training_inputs": self.card.get("inputs"), "training_metrics": self.card.get("metrics")}


def weights_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and little-endian bytes of each.

    >>> weights_digest({"a": np.zeros(2, np.float32)}) == weights_digest({"a": np.zeros(2, np.float32)})
    True
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _canonical(card: Mapping[str, Any]) -> str:
    return json.dumps(card, sort_keys=True, separators=(",", ":"), default=str)


def model_bytes(kind: str, tensors: Mapping[str, np.ndarray], *, config: Mapping[str, Any], inputs: list[dict[str, Any]],
                metrics: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The artifact's bytes and its card (see the module docstring for the layout)."""
    from safetensors.numpy import save

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    card = {
        "format_version": FORMAT_VERSION, "kind": kind, "module": MODEL_KINDS[kind], "qflow_version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "inputs": list(inputs), "config": dict(config),
        "metrics": dict(metrics), "spec": dict(spec),
        "tensors": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in sorted(arrays.items())},
        "weights_sha256": weights_digest(arrays),
    }
    card = json.loads(_canonical(card))  # plain JSON types, as a reader will see them
    text = _canonical(card)
    data = save(arrays, metadata={CARD_KEY: text, CARD_DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()})
    return data, card


def card_path(path: str | Path) -> Path:
    """``model.safetensors`` -> ``model.card.json``."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".card.json")


def save_model(path: str | Path, kind: str, tensors: Mapping[str, np.ndarray], **card_fields: Any) -> dict[str, Any]:
    """Write the artifact to ``path`` (``.safetensors``) and its card beside it; returns the card (with ``card_sha256``)."""
    target = Path(path)
    if target.suffix != ".safetensors":
        raise InputError("--out", "suffix", "a model is written as safetensors", "a name ending in .safetensors", target.suffix or "none")
    data, card = model_bytes(kind, tensors, **card_fields)
    target.write_bytes(data)
    digest = hashlib.sha256(_canonical(card).encode()).hexdigest()
    card_path(target).write_text(json.dumps({**card, "card_sha256": digest, "weights_file": target.name}, indent=2) + "\n")
    return {**card, "card_sha256": digest}


def _header(raw: RawInput, field: str) -> dict[str, Any]:
    """The safetensors JSON header, checked for shape before the library reads the file (a pickle fails here)."""
    from qflow.core.tensors import _check_safetensors_header

    expected = "a safetensors model written by qflow train"
    if len(raw.data) < 8 or struct.unpack("<Q", raw.data[:8])[0] > len(raw.data) - 8:
        raise InputError(raw.name, field, "not a safetensors file", expected, f"{len(raw.data)} bytes starting {raw.data[:4]!r}")
    try:
        _check_safetensors_header(raw)
        header = json.loads(raw.data[8:8 + struct.unpack("<Q", raw.data[:8])[0]].decode("utf-8"))
    except InputError as exc:
        raise InputError(raw.name, field, "not a safetensors file", expected, exc.problem) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(raw.name, field, "not a safetensors file", expected, "an unreadable header") from None
    if not isinstance(header, dict):
        raise InputError(raw.name, field, "not a safetensors file", expected, type(header).__name__)
    return header


def load_model(source: Source, kind: str, *, name: str | None = None, field: str = "model") -> ModelArtifact:
    """Read and check a model artifact of ``kind``; every refusal is one :class:`InputError`.

    Raises
    ------
    InputError
        See the module docstring for what is checked.
    """
    raw = read_input(source, name)
    if not raw.name.endswith(".safetensors"):
        raise InputError(raw.name, field, "models load from safetensors only", "a .safetensors file written by qflow train",
                         Path(raw.name).suffix or "no suffix")
    metadata = _header(raw, field).get("__metadata__") or {}
    text, digest = metadata.get(CARD_KEY), metadata.get(CARD_DIGEST_KEY)
    if not isinstance(text, str) or not isinstance(digest, str):
        raise InputError(raw.name, f"{field}.card", "no qflow model card", "a file written by qflow train", "plain safetensors")
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        raise InputError(raw.name, f"{field}.card_sha256", "the card does not match its digest (edited or damaged)",
                         "the digest written with the card", digest[:16])
    card = json.loads(text)
    if card.get("format_version") != FORMAT_VERSION:
        raise InputError(raw.name, f"{field}.format_version", "unsupported model format", f"version {FORMAT_VERSION}",
                         card.get("format_version"))
    if card.get("kind") != kind:
        raise InputError(raw.name, f"{field}.kind", "a model of another kind", f"a {kind} model (qflow train {kind})", card.get("kind"))
    tensors = _tensors(raw, field)
    declared = card.get("tensors") or {}
    found = {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in tensors.items()}
    if found != declared:
        bad = next((k for k in sorted(set(found) | set(declared)) if found.get(k) != declared.get(k)), "(tensors)")
        raise InputError(raw.name, f"{field}.tensors.{bad}", "tensors differ from the card", declared.get(bad), found.get(bad))
    if weights_digest(tensors) != card.get("weights_sha256"):
        raise InputError(raw.name, f"{field}.weights_sha256", "the weights do not match the card's digest (edited or damaged)",
                         str(card.get("weights_sha256"))[:16], weights_digest(tensors)[:16])
    return ModelArtifact(kind=kind, tensors=tensors, card=card, card_sha256=digest, source=raw.name)


def _tensors(raw: RawInput, field: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return dict(sorted(load(raw.data).items()))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(raw.name, field, "not a safetensors file", "a safetensors model written by qflow train",
                         str(exc).splitlines()[0]) from None


def check_spec(model: ModelArtifact, needed: Mapping[str, Any], field: str = "model") -> None:
    """Refuse a model whose card ``spec`` differs from what the plan needs, naming the first differing entry."""
    spec = model.card.get("spec") or {}
    for key, value in needed.items():
        if spec.get(key) != value:
            raise InputError(model.source, f"{field}.spec.{key}", "the model does not fit these inputs", value, spec.get(key))


def models_dir() -> Path:
    """Where ``qflow train`` writes by default and the console lists models: ``$QFLOW_HOME/models``."""
    from qflow.core.runs import qflow_home

    return qflow_home() / "models"


def list_models(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The cards of the models in ``folder`` (default :func:`models_dir`), newest first; unreadable cards are skipped."""
    root = Path(folder) if folder is not None else models_dir()
    rows = []
    for path in sorted(root.glob("*.card.json")) if root.is_dir() else []:
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(card, dict) and card.get("kind") in MODEL_KINDS:
            weights = path.with_name(str(card.get("weights_file", "")))
            rows.append({"file": str(weights), "exists": weights.is_file(), "kind": card["kind"], "module": card.get("module"),
                         "created_at": card.get("created_at"), "card_sha256": card.get("card_sha256"),
                         "metrics": card.get("metrics"), "qflow_version": card.get("qflow_version")})
    return sorted(rows, key=lambda r: str(r["created_at"]), reverse=True)


@dataclass(frozen=True)
class TrainedModel:
    """What a module's trainer returns: the tensors and the card's fields (see :func:`model_bytes`)."""

    tensors: dict[str, np.ndarray]
    spec: dict[str, Any]
    metrics: dict[str, Any]
    inputs: list[dict[str, Any]]
    config: dict[str, Any]

    def save(self, path: str | Path, kind: str) -> dict[str, Any]:
        return save_model(path, kind, self.tensors, config=self.config, inputs=self.inputs, metrics=self.metrics, spec=self.spec)


@dataclass(frozen=True)
class Trainer:
    """One ``qflow train KIND`` subcommand, shaped like a module command for the CLI's input and config flags.

    ``train(files, config) -> TrainedModel``; ``files`` maps every input name
    to a path (``None`` for an optional input not given).
    """

    name: str
    help: str
    config_cls: type[QflowConfig]
    inputs: tuple[str, ...]
    input_help: dict[str, str]
    train: Callable[..., TrainedModel]
    optional_inputs: tuple[str, ...] = field(default=())

    @staticmethod
    def plan_path(out: Path) -> Path:
        """The card beside the model (the CLI checks both can be written)."""
        return card_path(out)


def _iter_trainers():
    import importlib
    import importlib.util

    from qflow.core.commands import MODULE_PACKAGES

    for package in MODULE_PACKAGES:
        if importlib.util.find_spec(f"qflow.{package}") is not None and importlib.util.find_spec(f"qflow.{package}._train") is not None:
            yield from importlib.import_module(f"qflow.{package}._train").TRAINERS


def available_trainers() -> list[Trainer]:
    """Every module's trainers (``qflow/<module>/_train.py`` ``TRAINERS``), in the registry's order."""
    return list(_iter_trainers())


def load_trainer(kind: str) -> Trainer:
    """The trainer of ``kind``."""
    for trainer in _iter_trainers():
        if trainer.name == kind:
            return trainer
    raise KeyError(kind)


def model_digest(source: Source) -> Any:
    """The plan's input digest of a model file (its bytes)."""
    raw = read_input(source)
    return raw.digest("model")


def digest_list(digests: list[Any]) -> list[dict[str, Any]]:
    """Input digests (``InputDigest`` or dicts) as plain dicts for the card."""
    return [d.model_dump(exclude_none=True) if hasattr(d, "model_dump") else dict(d) for d in digests]
