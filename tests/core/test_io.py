"""Loaders: good files become plain data; bad files raise InputError naming file, field and expectation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest

import qflow.core.io as qio
from qflow.core.errors import InputError
from qflow.core.io import digest_frame, digest_mapping, load_graph, load_mapping, load_table, read_input
from qflow.core.limits import LimitExceededError
from qflow.core.plan import digest_bytes

RECORDS = [{"token_id": "a", "complexity": 1}, {"token_id": "b", "complexity": 2}]


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def error_of(call, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    err = info.value
    assert err.expected, "every loader error says what was expected"
    assert str(err) == err.message
    return err


class TestReadInput:
    def test_path_bytes_and_file_objects(self, tmp_path):
        path = write(tmp_path, "t.csv", "token_id\na\n")
        assert read_input(path).name == "t.csv"
        assert read_input(str(path)).data == b"token_id\na\n"
        assert read_input(b"abc", name="x.json").name == "x.json"
        upload = io.BytesIO(b"abc")
        upload.name = "/tmp/uploads/u.yaml"
        raw = read_input(upload)
        assert (raw.name, raw.data, raw.suffix) == ("u.yaml", b"abc", ".yaml")
        assert read_input(io.StringIO("text"), name="s.txt").data == b"text"

    def test_missing_file(self, tmp_path):
        err = error_of(read_input, tmp_path / "nope.csv")
        assert (err.source, err.field) == ("nope.csv", "(file)")
        assert "file not found" in str(err) and "expected an existing file" in str(err)

    def test_too_large_by_max_bytes(self, tmp_path):
        path = write(tmp_path, "big.json", "[" + "1," * 50 + "1]")
        err = error_of(read_input, path, max_bytes=64)
        assert str(err) == f"big.json: (file): file too large; expected at most 64 bytes, got {path.stat().st_size} bytes"
        assert read_input(path, max_bytes=path.stat().st_size).data == path.read_bytes()

    @pytest.mark.parametrize("source", ["bytes", "upload"])
    def test_too_large_in_memory(self, source):
        data = b"x" * 100
        if source == "upload":
            data = io.BytesIO(data)
        err = error_of(read_input, data, name="mem.csv", max_bytes=10)
        assert "mem.csv: (file): file too large" in str(err)

    def test_module_limit_applies_to_loaders(self, tmp_path, monkeypatch):
        # Set after import: the limit is read when a file is read, not when qflow.core.io is imported.
        monkeypatch.setenv("QFLOW_MAX_INPUT_MB", str(16 / 2**20))
        assert qio.MAX_INPUT_BYTES == 16
        path = write(tmp_path, "tokens.csv", "token_id,complexity\n" + "a,1\n" * 10)
        err = error_of(load_table, path)
        assert isinstance(err, LimitExceededError)
        assert str(err).startswith("tokens.csv: (file): over the input_bytes limit")
        assert "QFLOW_MAX_INPUT_MB" in str(err) and "at most 16 bytes, got 60 bytes" in str(err)
        assert error_of(load_mapping, io.BytesIO(b'{"a": 1, "b": 2, "c": 3}')).field == "(file)"

    @pytest.mark.parametrize("data", [b"", b"  \n\t\n"])
    def test_empty_file(self, tmp_path, data):
        err = error_of(load_mapping, write(tmp_path, "c.json", data))
        assert str(err) == "c.json: (file): file is empty; expected a non-empty file"

    def test_unsupported_source(self):
        err = error_of(read_input, 42, name="x")
        assert "unsupported input" in str(err) and "got int" in str(err)


class TestLoadTable:
    def test_csv(self, tmp_path):
        frame, raw = load_table(write(tmp_path, "t.csv", "token_id, complexity\na, 1\nb, 2\n"))
        assert list(frame.columns) == ["token_id", "complexity"]
        assert frame["token_id"].tolist() == ["a", "b"] and frame["complexity"].tolist() == [1, 2]
        assert raw.digest("tokens").sha256 == digest_bytes(raw.data)

    @pytest.mark.parametrize("sep", [", ", ",  "])
    def test_csv_spaced_and_compact_read_alike(self, tmp_path, sep):
        # Spaces after commas are skipped; without any space or tab in the bytes the parser skips nothing.
        rows = [["token_id", "source", "score_0"], ["007", "n1", "0.5"], ["b", "n2", "-1e-3"]]
        spaced, _ = load_table(write(tmp_path, "s.csv", "\n".join(sep.join(r) for r in rows) + "\n"), text_columns=("token_id",))
        compact, _ = load_table(write(tmp_path, "c.csv", "\n".join(",".join(r) for r in rows) + "\n"), text_columns=("token_id",))
        assert spaced.to_dict("list") == compact.to_dict("list")
        assert compact["token_id"].tolist() == ["007", "b"] and compact["score_0"].tolist() == [0.5, -1e-3]

    def test_csv_with_utf8_bom(self, tmp_path):
        frame, _ = load_table(write(tmp_path, "t.csv", b"\xef\xbb\xbftoken_id,complexity\na,1\n"))
        assert list(frame.columns) == ["token_id", "complexity"]

    def test_json_list(self, tmp_path):
        frame, _ = load_table(write(tmp_path, "t.json", json.dumps(RECORDS)))
        pd.testing.assert_frame_equal(frame, pd.DataFrame(RECORDS))

    def test_json_under_records_key(self, tmp_path):
        frame, _ = load_table(write(tmp_path, "t.json", json.dumps({"tokens": RECORDS})), records_key="tokens")
        assert frame["token_id"].tolist() == ["a", "b"]

    def test_json_detected_without_suffix(self):
        frame, _ = load_table(json.dumps(RECORDS).encode(), name="upload")
        assert len(frame) == 2

    def test_json_mapping_without_the_key(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.json", json.dumps({"rows": RECORDS})), records_key="tokens")
        assert str(err) == "t.json: tokens: wrong shape; expected a JSON list of objects, got dict"

    def test_json_list_of_non_objects(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.json", "[1, 2, 3]"))
        assert (err.field, err.received) == ("(top level)", "list")

    def test_invalid_json_names_the_line(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.json", '[\n{"token_id": "a"},\n{"token_id": }\n]'))
        assert (err.source, err.field) == ("t.json", "(line 3)")
        assert "invalid JSON" in str(err) and "expected a JSON document" in str(err)

    def test_non_utf8_csv(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.csv", b"token_id,complexity\n\xff\xfe,1\n"))
        assert err.source == "t.csv" and "invalid CSV" in str(err) and "utf-8" in str(err)

    def test_non_utf8_json(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.json", b'[{"token_id": "\xe9"}]'))
        assert str(err) == "t.json: (file): not UTF-8 text; expected a UTF-8 text file, got byte 15"

    def test_ragged_csv(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.csv", "token_id,complexity\na,1\nb,2,3,4\n"))
        assert (err.source, err.field) == ("t.csv", "(file)")
        assert "expected comma-separated rows under a header line" in str(err)

    def test_header_only(self, tmp_path):
        err = error_of(load_table, write(tmp_path, "t.csv", "token_id,complexity\n"))
        assert str(err) == "t.csv: (rows): no rows; expected at least one row"


class TestLoadMapping:
    def test_json(self, tmp_path):
        assert load_mapping(write(tmp_path, "c.json", '{"capacity_factor": 1.5}')) == {"capacity_factor": 1.5}

    @pytest.mark.parametrize("suffix", [".yaml", ".yml"])
    def test_yaml(self, tmp_path, suffix):
        text = "capacity_factor: 1.5\nqaoa: yes\nnested:\n  - 1\n  - two\n"
        assert load_mapping(write(tmp_path, "c" + suffix, text)) == {"capacity_factor": 1.5, "qaoa": True, "nested": [1, "two"]}

    def test_yaml_bytes_named_by_name(self):
        assert load_mapping(b"a: 1\n", name="routing.yaml") == {"a": 1}

    def test_invalid_yaml(self, tmp_path):
        err = error_of(load_mapping, write(tmp_path, "c.yaml", "a: 1\nb: [1, 2\nc: 3\n"))
        assert err.source == "c.yaml" and err.field.startswith("(line ")
        assert "invalid YAML" in str(err) and "expected a YAML document" in str(err)

    @pytest.mark.parametrize(
        "tag",
        [
            "!!python/object/apply:os.system ['echo owned']",
            "!!python/object/new:collections.OrderedDict [[[k, v]]]",
            "!!python/name:builtins.eval",
        ],
    )
    def test_yaml_refuses_python_tags(self, tmp_path, tag):
        err = error_of(load_mapping, write(tmp_path, "evil.yaml", f"payload: {tag}\n"))
        assert (err.source, err.field) == ("evil.yaml", "(line 1)")
        assert "invalid YAML" in str(err) and "python/" in err.received

    @pytest.mark.parametrize(
        ("name", "text", "received"),
        [("c.json", "[1, 2]", "list"), ("c.json", '"text"', "str"), ("c.yaml", "- a\n- b\n", "list"), ("c.yaml", "---\n", "NoneType")],
    )
    def test_wrong_top_level_type(self, tmp_path, name, text, received):
        err = error_of(load_mapping, write(tmp_path, name, text))
        assert str(err) == f"{name}: (top level): wrong type; expected a mapping (JSON object), got {received}"

    def test_invalid_json(self, tmp_path):
        err = error_of(load_mapping, write(tmp_path, "c.json", "{'single': 'quotes'}"))
        assert str(err).startswith("c.json: (line 1): invalid JSON (")

    def test_non_utf8_yaml(self, tmp_path):
        err = error_of(load_mapping, write(tmp_path, "c.yaml", b"a: \xff\n"))
        assert str(err) == "c.yaml: (file): not UTF-8 text; expected a UTF-8 text file, got byte 3"

    def test_deeply_nested_json(self, tmp_path):
        err = error_of(load_mapping, write(tmp_path, "c.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"))
        assert str(err) == "c.json: (file): JSON nested too deeply; expected a JSON document"


class TestLoadGraph:
    def graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_node("n0", gpus=["g0"])
        g.add_node("n1")
        g.add_edge("n0", "n1", bandwidth_gbps=400.0)
        return g

    @pytest.mark.parametrize("edges", ["links", "edges"])
    def test_node_link_json(self, tmp_path, edges):
        data = nx.node_link_data(self.graph(), edges=edges)
        graph, raw = load_graph(write(tmp_path, "g.json", json.dumps(data)))
        assert sorted(graph.nodes) == ["n0", "n1"]
        assert graph.nodes["n0"]["gpus"] == ["g0"]
        assert graph.edges["n0", "n1"]["bandwidth_gbps"] == 400.0
        assert raw.name == "g.json"

    def test_not_node_link(self, tmp_path):
        err = error_of(load_graph, write(tmp_path, "g.json", '{"experts": []}'))
        assert str(err) == "g.json: nodes: not node-link data; expected an object with 'nodes' and 'links'"

    def test_nodes_without_ids(self, tmp_path):
        err = error_of(load_graph, write(tmp_path, "g.json", '{"nodes": [{"name": "n0"}], "links": []}'))
        assert (err.field, err.expected) == ("nodes", "a list of objects each with an 'id'")

    def test_links_without_target(self, tmp_path):
        text = '{"nodes": [{"id": "n0"}, {"id": "n1"}], "links": [{"source": "n0"}]}'
        err = error_of(load_graph, write(tmp_path, "g.json", text))
        assert (err.source, err.field) == ("g.json", "links")
        assert "links with 'source' and 'target'" in str(err)

    def test_invalid_json(self, tmp_path):
        err = error_of(load_graph, write(tmp_path, "g.json", '{"nodes": ['))
        assert err.source == "g.json" and "invalid JSON" in str(err)


class TestDigests:
    def test_frame_digest_tracks_content(self):
        frame = pd.DataFrame({"token_id": ["a", "b"], "scores": [[0.1, 0.9], [0.5, 0.5]]})
        d = digest_frame(frame, "tokens")
        assert (d.name, d.rows, d.shape) == ("tokens", 2, [2, 2])
        assert len(d.sha256) == 64 and int(d.sha256, 16) >= 0
        assert digest_frame(frame.copy(), "tokens").sha256 == d.sha256
        changed = frame.copy()
        changed.at[1, "scores"] = [0.4, 0.6]
        assert digest_frame(changed, "tokens").sha256 != d.sha256
        assert digest_frame(frame.rename(columns={"scores": "s"}), "tokens").sha256 != d.sha256

    def test_frame_digest_of_text_columns_ignores_chunking(self):
        whole = pd.DataFrame({"token_id": pd.Series(["t0", "t1", None, "t3"], dtype="str"), "x": [1.0, 2.0, 3.0, 4.0]})
        halves = pd.concat([whole.iloc[:2], whole.iloc[2:]], ignore_index=True)
        assert digest_frame(halves, "t").sha256 == digest_frame(whole, "t").sha256
        blank = whole.copy()
        blank.loc[2, "token_id"] = ""
        moved = whole.copy()
        moved["token_id"] = pd.Series(["t0t", "1", None, "t3"], dtype="str")
        for other in (blank, moved, whole.iloc[1:]):
            assert digest_frame(other, "t").sha256 != digest_frame(whole, "t").sha256

    def test_frame_with_duplicate_column_names(self):
        frame = pd.DataFrame([[1, "x"], [2, "y"]], columns=["a", "a"])
        assert digest_frame(frame, "t").sha256 != digest_frame(frame.iloc[::-1], "t").sha256

    def test_mapping_digest_is_key_order_free(self):
        a = digest_mapping({"x": 1, "y": [1, 2]}, "g")
        b = digest_mapping({"y": [1, 2], "x": 1}, "g")
        assert a.sha256 == b.sha256 == digest_bytes(b'{"x":1,"y":[1,2]}')
        assert digest_mapping({"x": 2, "y": [1, 2]}, "g").sha256 != a.sha256
