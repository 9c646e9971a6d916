"""Limits: defaults, environment overrides, malformed variables, the error raised."""

import pytest

from qflow.core.errors import InputError
from qflow.core.limits import LIMITS, LimitExceededError, check_limit, limit_value, validate_environment


def test_mib_limits_are_bytes_and_env_overrides(monkeypatch):
    monkeypatch.setenv("QFLOW_MAX_DECODED_MB", "3")
    assert limit_value("decoded_bytes") == 3 * 2**20
    monkeypatch.delenv("QFLOW_MAX_DECODED_MB")
    assert limit_value("decoded_bytes") == LIMITS["decoded_bytes"].default * 2**20


@pytest.mark.parametrize("text", ["abc", "-1", "inf", "nan", "1e400"])
def test_malformed_variable_names_itself(text):
    with pytest.raises(InputError) as info:
        validate_environment({"QFLOW_MAX_UPLOAD_MB": text})
    assert info.value.source == "QFLOW_MAX_UPLOAD_MB"
    assert "\n" not in info.value.message


def test_over_limit_names_file_field_limit_and_declared(monkeypatch):
    monkeypatch.setenv("QFLOW_MAX_ARCHIVE_MEMBERS", "5")
    check_limit(5, "archive_members", "x.npz", "(members)")
    with pytest.raises(LimitExceededError) as info:
        check_limit(6, "archive_members", "x.npz", "(members)")
    message = info.value.message
    assert message.startswith("x.npz: (members): over the archive_members limit")
    assert "QFLOW_MAX_ARCHIVE_MEMBERS" in message and "at most 5" in message and "got 6" in message
    assert isinstance(info.value, InputError)


def test_max_workers_caps_at_cores_and_variable(monkeypatch):
    from qflow.core.limits import max_workers

    monkeypatch.delenv("QFLOW_MAX_WORKERS", raising=False)
    cores = max_workers(None)
    assert cores >= 1
    assert max_workers(10_000) == cores
    assert max_workers(-1) == cores
    monkeypatch.setenv("QFLOW_MAX_WORKERS", "1")
    assert max_workers(32) == 1
