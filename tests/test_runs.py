"""``mmrl.runs``: the run plumbing that train, evaluate and compare share (folders, atomic writes, saved config, device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mmrl.runs import (
    CONFIG_FILE, RunDirError, atomic_write_json, atomic_write_text, atomic_write_yaml, check_run_dir_name,
    load_run_config, new_output_dir, resolve_device, unique_run_dir,
)  # fmt: skip


def test_unique_run_dir_skips_folders_that_hold_a_run(tmp_path: Path) -> None:
    path = tmp_path / "run"
    assert unique_run_dir(path) == path
    path.mkdir()  # an empty folder (Hydra's, for its log) is still free
    assert unique_run_dir(path) == path
    (path / CONFIG_FILE).write_text("seed: 0\n")
    assert unique_run_dir(path) == tmp_path / "run-1"
    assert not (tmp_path / "run-1").exists(), "only a name: the folder is made by the run"


def test_new_output_dir_never_reuses_a_folder(tmp_path: Path) -> None:
    first, second = new_output_dir(tmp_path / "eval"), new_output_dir(tmp_path / "eval")
    assert (first, second) == (tmp_path / "eval", tmp_path / "eval-1") and second.is_dir()


def test_an_overlong_folder_name_names_the_limit_and_the_remedy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is 300 bytes; file systems take at most 255.*experiment="):
        check_run_dir_name(tmp_path / ("x" * 300))
    check_run_dir_name(tmp_path / ("x" * 200))


def test_atomic_text_json_and_yaml(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "t.txt", "héllo\n")
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    atomic_write_yaml(tmp_path / "c.yaml", {"z": {"y": [1, 2]}, "a": "1e-3", "run_dir": "/tmp/x"})
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "m.json").read_text()) == {"b": 1, "a": [1.5]}
    text = (tmp_path / "c.yaml").read_text()
    assert text.startswith("z:") and "run_dir: /tmp/x" in text, "keys in their order, block style"
    assert yaml.safe_load(text) == {"z": {"y": [1, 2]}, "a": "1e-3", "run_dir": "/tmp/x"}, "strings stay strings"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.yaml", "m.json"], "no temporary files left"


def test_load_run_config_reads_the_saved_config_and_names_what_is_wrong(tmp_path: Path) -> None:
    config = {"env": {"id": "mmrl/Recommend-v0"}, "algo": {"name": "ppo"}, "seed": 3}
    atomic_write_yaml(tmp_path / CONFIG_FILE, config)
    assert load_run_config(tmp_path) == config
    (tmp_path / CONFIG_FILE).write_text("[1, 2]\n")
    with pytest.raises(RunDirError, match="is corrupt: expected a mapping, got list"):
        load_run_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("algo: {name: ppo}\n")
    with pytest.raises(RunDirError, match="not a training config: no env.id"):
        load_run_config(tmp_path)
    assert load_run_config(tmp_path, required=("algo.name",)) == {"algo": {"name": "ppo"}}
    with pytest.raises(RunDirError, match=f"{tmp_path / 'nope'} does not exist"):
        load_run_config(tmp_path / "nope")


@pytest.mark.parametrize(("saved", "name"), [("ppo_fast", "ppo"), ("dqn_fast", "dqn")])
def test_runs_saved_with_the_former_fast_algorithm_names_still_load(tmp_path: Path, saved: str, name: str) -> None:
    atomic_write_yaml(tmp_path / CONFIG_FILE, {"env": {"id": "mmrl/Recommend-v0"}, "algo": {"name": saved, "hyperparams": {}}})
    assert load_run_config(tmp_path)["algo"] == {"name": name, "hyperparams": {}, "device_resident": True}


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cudax", "cuda:x"):
        with pytest.raises(ValueError, match=f"device must be 'auto', 'cpu' or 'cuda'; got '{bad}'"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:1' was asked for but CUDA is not available"):
            resolve_device("cuda:1")
