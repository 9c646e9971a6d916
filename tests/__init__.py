"""QuantumFlow tests (a package so that tests/conftest.py and the per-folder conftest.py files import under distinct names)."""
