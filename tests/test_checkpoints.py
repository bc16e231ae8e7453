"""Checkpoints without pickle: what is saved comes back exactly, and nothing in a checkpoint can run code."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrl.checkpoints import (
    CheckpointError,
    join_tensors,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    split_tensors,
)
from mmrl.train import build_model, compose_config, make_train_env

SMALL = ["n_envs=4", "extractor.features_dim=16", "extractor.text_dim=8", "extractor.image_channels=[8,8]", "seed=3"]
DQN = ["algo=dqn", "algo.hyperparams.buffer_size=400", "algo.hyperparams.learning_starts=16",
       "algo.hyperparams.batch_size=8", "algo.hyperparams.target_update_interval=8"]  # fmt: skip
PAYLOAD_MARK = "mmrl-test-payload-ran"


class Payload:
    """Unpickling this runs ``print`` with a marker: it shows whether a loader executes code."""

    def __reduce__(self):
        return (print, (PAYLOAD_MARK,))


def _config(*overrides: str):
    return compose_config([*SMALL, *overrides])


def _trained(config, steps: int):
    env = make_train_env(config, "cpu")
    model = build_model(config, env, "cpu")
    model.learn(steps)
    return model, env


def _assert_same_state_dicts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_state_dicts(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("device_resident", [False, True], ids=["stock", "device_resident"])
def test_dqn_checkpoint_round_trip(tmp_path: Path, device_resident: bool) -> None:
    config = _config(*DQN, f"algo.device_resident={str(device_resident).lower()}")
    model, env = _trained(config, 96)
    extra = {"trainer": {"best": {"mean_return": np.float32(1.5), "step": 64}}, "env": {"seeds": torch.arange(4)}}
    save_checkpoint(model, tmp_path, extra)
    draws = (random.random(), np.random.rand(), torch.rand(1).item(), model.action_space.sample())

    (checkpoint,) = list_checkpoints(tmp_path)
    assert not list(tmp_path.glob("*.pkl")), "nothing is pickled"
    restored, restored_extra = load_checkpoint(checkpoint, lambda: build_model(config, env, "cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1).item(), restored.action_space.sample()) == draws
    assert restored_extra["trainer"]["best"] == {"mean_return": 1.5, "step": 64}
    torch.testing.assert_close(restored_extra["env"]["seeds"], torch.arange(4))
    for name in ("num_timesteps", "_n_updates", "_n_calls", "_episode_num", "exploration_rate", "_current_progress_remaining"):
        assert getattr(restored, name) == getattr(model, name), name
    assert list(restored.ep_info_buffer) == list(model.ep_info_buffer)
    _assert_same_state_dicts(restored.policy.state_dict(), model.policy.state_dict())
    _assert_same_state_dicts(restored.policy.optimizer.state_dict(), model.policy.optimizer.state_dict())
    old, new = model.replay_buffer, restored.replay_buffer
    assert (new.pos, new.full, new.size()) == (old.pos, old.full, old.size()) and old.size() * 4 == 96
    rows = old.buffer_size if old.full else old.pos  # rows never written hold whatever memory held (NaN too)
    for name in ("observations", "next_observations"):
        for key in old.observations:
            assert np.array_equal(np.asarray(getattr(new, name)[key][:rows]), np.asarray(getattr(old, name)[key][:rows])), (name, key)
    for name in ("actions", "rewards", "dones", "timeouts"):
        assert np.array_equal(np.asarray(getattr(new, name)[:rows]), np.asarray(getattr(old, name)[:rows])), name


def test_ppo_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A checkpoint loaded into a fresh model continues with the same counters and learning-rate progress."""
    config = _config("algo.hyperparams.n_steps=16", "algo.hyperparams.batch_size=32", "algo.hyperparams.n_epochs=1")
    model, env = _trained(config, 128)
    save_checkpoint(model, tmp_path)
    restored = load_latest_checkpoint(tmp_path, lambda: build_model(config, env, "cpu"))
    assert restored is not None and restored.checkpoint.steps == 128 == restored.model.num_timesteps
    assert restored.model._n_updates == model._n_updates > 0
    restored.model.learn(64, reset_num_timesteps=False)
    assert restored.model.num_timesteps == 192


def test_split_tensors_refuses_what_would_need_pickle() -> None:
    tensors: dict[str, torch.Tensor] = {}
    data = split_tensors({"a": (1, [np.arange(3), torch.ones(2)]), "b": np.int64(4)}, tensors)
    assert json.loads(json.dumps(data)) == data and len(tensors) == 2
    back = join_tensors(data, tensors)
    assert back["a"][0] == 1 and np.array_equal(back["a"][1][0], np.arange(3)) and back["b"] == 4
    with pytest.raises(TypeError, match=r"checkpoint state at 'x' is a Payload"):
        split_tensors({"x": Payload()}, {})
    with pytest.raises(TypeError, match="keys must be strings"):
        split_tensors({1: 2}, {})


@pytest.fixture(scope="module")
def ppo_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("ckpt")
    config = _config("algo.hyperparams.n_steps=16", "algo.hyperparams.batch_size=32", "algo.hyperparams.n_epochs=1")
    model, env = _trained(config, 64)
    save_checkpoint(model, directory)
    return directory, lambda: build_model(config, env, "cpu")


def _copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_pickle_payloads_do_not_run(ppo_checkpoint, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    source, build = ppo_checkpoint
    # a payload in the tensor file: torch.load(weights_only=True) refuses it
    directory = _copy(source, tmp_path / "tensors")
    (checkpoint,) = list_checkpoints(directory)
    torch.save({"torch": Payload()}, checkpoint.tensors)
    skipped: list = []
    assert load_latest_checkpoint(directory, build, skipped) is None
    assert "Weights only load failed" in skipped[0][1] or "weights_only" in skipped[0][1], skipped

    # a payload in the zip's data entry: only parsed as JSON, never deserialised
    directory = _copy(source, tmp_path / "data")
    (checkpoint,) = list_checkpoints(directory)
    with zipfile.ZipFile(checkpoint.model) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    import base64
    import pickle

    data = json.loads(entries["data"])
    data["policy_class"] = {":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(checkpoint.model, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    assert load_latest_checkpoint(directory, build) is not None

    # a checkpoint of the old pickled format is refused, not unpickled
    directory = _copy(source, tmp_path / "legacy")
    (checkpoint,) = list_checkpoints(directory)
    checkpoint.state.unlink()
    checkpoint.legacy_files[0].write_bytes(pickle.dumps(Payload()))
    skipped = []
    assert load_latest_checkpoint(directory, build, skipped) is None
    assert "written by an older mmrl as a pickle" in skipped[0][1]
    assert PAYLOAD_MARK not in capfd.readouterr().out, "a payload ran"


def test_damaged_state_files_are_named(ppo_checkpoint, tmp_path: Path) -> None:
    source, build = ppo_checkpoint
    directory = _copy(source, tmp_path / "a")
    (checkpoint,) = list_checkpoints(directory)
    state = json.loads(checkpoint.state.read_text())
    state["counters"]["num_timesteps"] = 7
    checkpoint.state.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="model is at 64 steps, state file at 7"):
        load_checkpoint(checkpoint, build)
    checkpoint.state.write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        load_checkpoint(checkpoint, build)
    checkpoint.state.unlink()
    with pytest.raises(FileNotFoundError, match="state.json"):
        load_checkpoint(checkpoint, build)
