"""Optional metric sinks: TensorBoard event files, and clear errors when a package is missing."""

from __future__ import annotations

import struct
import sys
from typing import NamedTuple

import numpy as np
import pytest

from jaxrl_po import sinks
from jaxrl_po.config import ConfigError


class Rows(NamedTuple):
    env_steps: np.ndarray
    episode_return: np.ndarray
    policy_loss: np.ndarray


def read_scalars(path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing, read by hand)."""
    from tensorboardX.proto import event_pb2

    data, out, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        record = data[offset + 12: offset + 12 + length]  # skip the length's CRC
        offset += 12 + length + 4  # and the record's CRC
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            out.append((value.tag, event.step, value.simple_value))
    return out


def test_tensorboard_sink_writes_one_event_file_per_run_with_the_metric_tags(tmp_path):
    sink = sinks.TensorBoardSink(tmp_path, sinks.run_labels([0, 1], [{}, {}]))
    # Two runs, a segment of 3 rows; run 1 stopped after its first row (env_steps 0 afterwards).
    rows = Rows(
        env_steps=np.array([[10, 20, 30], [10, 0, 0]], np.int32),
        episode_return=np.array([[1.0, np.nan, 3.0], [5.0, np.nan, np.nan]], np.float32),
        policy_loss=np.array([[0.1, 0.2, 0.3], [0.5, np.nan, np.nan]], np.float32),
    )
    sink.append(rows, first_update=np.array([1, 1]))
    sink.close()
    files = {p.parent.name: p for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*")}
    assert sorted(files) == ["seed0", "seed1"]
    seed0 = read_scalars(files["seed0"])
    assert ("train/policy_loss", 20, pytest.approx(0.2)) in seed0
    assert ("train/update", 30, 3.0) in seed0
    returns = [(step, value) for tag, step, value in seed0 if tag == "train/episode_return"]
    assert [s for s, _ in returns] == [10, 20, 30] and np.isnan(returns[1][1])
    seed1 = read_scalars(files["seed1"])
    assert {step for _, step, _ in seed1} == {10}


def test_run_labels_name_seed_and_swept_values():
    assert sinks.run_labels([0, 1], [{"lr": 0.001, "ent_coef": 0.0}] * 2) == [
        "lr=0.001,ent_coef=0-seed0", "lr=0.001,ent_coef=0-seed1"]


@pytest.mark.parametrize("module, flag", [("wandb", "wandb"), ("tensorboardX", "tensorboard")])
def test_missing_package_names_the_flag_and_how_to_install(monkeypatch, module, flag):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError) as err:
        sinks.require(module, flag, flag)
    assert err.value.field == flag and f"pip install {module!r}" in str(err.value)
