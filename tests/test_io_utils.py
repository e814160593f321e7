"""Tests for util/io_utils: atomic writes leave either the old or the new file."""

import os

import pytest

from util import io_utils


def test_round_trips_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "x.json"
    io_utils.write_json({"k": [1, 2]}, target, indent=2)
    assert io_utils.load_json(target) == {"k": [1, 2]}
    io_utils.write_pickle({"s": {1, 2}}, tmp_path / "p.pkl")
    assert io_utils.load_pickle(tmp_path / "p.pkl") == {"s": {1, 2}}
    io_utils.write_text("héllo\n", tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode("utf-8")
    assert sorted(os.listdir(tmp_path)) == ["a", "p.pkl", "t.txt"]


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    io_utils.write_json([1], target)
    with pytest.raises(TypeError):
        io_utils.write_json({"bad": object()}, target)
    assert io_utils.load_json(target) == [1]
    with pytest.raises(RuntimeError):
        with io_utils.atomic_path(target) as temp:
            with open(temp, "w") as f:
                f.write("partial")
            assert io_utils.is_temp_name_for(os.path.basename(temp), "x.json")
            raise RuntimeError("killed mid-write")
    assert io_utils.load_json(target) == [1]
    assert os.listdir(tmp_path) == ["x.json"]
