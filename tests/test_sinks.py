"""Optional metric sinks: TensorBoard event files, and clear errors when a package is missing."""

from __future__ import annotations

import http.server
import json
import struct
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import numpy as np
import pytest

from conftest import cli_env
from jaxrl_po import sinks
from jaxrl_po.config import ConfigError


class Rows(NamedTuple):
    env_steps: np.ndarray
    episode_return: np.ndarray
    policy_loss: np.ndarray


def read_events(path) -> list:
    """Every event of a TensorBoard event file (TFRecord framing, read by hand)."""
    from tensorboardX.proto import event_pb2

    data, out, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        record = data[offset + 12: offset + 12 + length]  # skip the length's CRC
        offset += 12 + length + 4  # and the record's CRC
        out.append(event_pb2.Event.FromString(record))
    return out


def read_scalars(path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in a TensorBoard event file."""
    return [(value.tag, event.step, value.simple_value) for event in read_events(path) for value in event.summary.value]


def visible_scalars(directory) -> list[tuple[str, int, float]]:
    """The scalars TensorBoard shows for one run directory of event files, oldest file first.

    A session-start event at step T (a writer's ``purge_step``) hides every
    event logged before it at a step >= T, as TensorBoard's loader does.
    """
    from tensorboardX.proto import event_pb2

    shown = []
    files = [read_events(path) for path in directory.glob("events.out.tfevents.*")]
    for events in sorted(files, key=lambda events: events[0].wall_time):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                shown = [item for item in shown if item[1] < event.step]
            shown += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
    return shown


def read_wandb_run(directory) -> tuple[str, dict, list[dict]]:
    """(display name, config, history rows) of an offline W&B run (a ``wandb/offline-run-*`` directory).

    Its ``run-<id>.wandb`` file is a LevelDB-style log, read by hand: a 7-byte header, then
    32 KiB blocks of chunks (crc32, length, type: 1 whole record, 2 first, 3 middle, 4 last
    part), a block's last < 7 bytes being padding; each record is a W&B ``Record`` protobuf.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = directory.glob("run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    records, offset, parts = [], 7, b""
    while offset + 7 <= len(data):
        if block - offset % block < 7:
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        parts += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(parts))
            parts = b""
    name, config, rows = None, {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            # A history item's key is in nested_key when it holds a "/" (``seed0/policy_loss``).
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return name, config, rows


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
    # No episode finished in the second update: its NaN return is left out (tensorboardX would warn).
    assert [(step, value) for tag, step, value in seed0 if tag == "train/episode_return"] == [(10, 1.0), (30, 3.0)]
    seed1 = read_scalars(files["seed1"])
    assert {step for _, step, _ in seed1} == {10}


def test_resumed_tensorboard_sink_hides_what_was_logged_after_the_checkpoint(tmp_path):
    """A session killed after its checkpoint at 20 env steps logged up to 40; the resumed one logs 30 and 40 again."""
    rows = lambda steps: Rows(env_steps=np.array([steps], np.int32), episode_return=np.array([steps], np.float32),
                              policy_loss=np.zeros((1, len(steps)), np.float32))
    first = sinks.TensorBoardSink(tmp_path, ["seed0"])
    first.append(rows([10, 20, 30, 40]), first_update=np.array([1]))
    first.close()
    time.sleep(1.1)  # event file names carry the second they were made in; a resume comes later than this
    resumed = sinks.TensorBoardSink(tmp_path, ["seed0"], resumed_env_steps=[20])
    resumed.append(rows([30, 40]), first_update=np.array([3]))
    resumed.close()
    shown = [(step, value) for tag, step, value in visible_scalars(tmp_path / "tensorboard" / "seed0")
             if tag == "train/episode_return"]
    assert shown == [(10, 10.0), (20, 20.0), (30, 30.0), (40, 40.0)]  # once each


def test_run_labels_name_seed_and_swept_values():
    assert sinks.run_labels([0, 1], [{"lr": 0.001, "ent_coef": 0.0}] * 2) == [
        "lr=0.001,ent_coef=0-seed0", "lr=0.001,ent_coef=0-seed1"]
    # Values that %g would round alike stay apart (each label is one TensorBoard directory).
    assert sinks.run_labels([0, 0], [{"lr": 1.0000001e-3}, {"lr": 1.0000002e-3}]) == [
        "lr=0.0010000001-seed0", "lr=0.0010000002-seed0"]


@pytest.mark.parametrize("module, flag", [("wandb", "wandb"), ("tensorboardX", "tensorboard")])
def test_missing_package_names_the_flag_and_how_to_install(monkeypatch, module, flag):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError) as err:
        sinks.require(module, flag, flag)
    assert err.value.field == flag and f"pip install {module!r}" in str(err.value)


@pytest.mark.parametrize("mode, message", [
    (None, "wandb login"),
    ("onlin", "W&B setting mode: Input should be 'online', 'offline'"),  # pydantic's first line names no setting
])
def test_cli_wandb_without_a_login_fails_before_compiling_and_leaves_nothing(tmp_path, mode, message):
    """No API key and no terminal to ask for one, or a bad WANDB_MODE: a one-line error naming --wandb,
    exit 2, no run directory."""
    env = cli_env()
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        env.pop(name, None)
    if mode:
        env["WANDB_MODE"] = mode
    env.update(HOME=str(tmp_path / "home"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "jaxrl_po.train", "--wandb", "--run-dir", str(run_dir)],
                         env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: --wandb: cannot log in to W&B") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr + res.stdout
    assert "compiling" not in res.stdout and not run_dir.exists()


class _RefusingWandbServer(http.server.BaseHTTPRequestHandler):
    """A stand-in W&B server that answers every request as W&B does for an unknown entity."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"errors": [{"message": "entity nobody-here not found"}]}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def test_cli_wandb_run_that_cannot_start_leaves_the_run_dir_free_for_a_rerun(tmp_path):
    """W&B refuses the run (an unknown entity) after compiling: one line naming --wandb, exit 2, and the
    same --run-dir works again: only W&B's own logs were left there, and the rerun keeps them."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingWandbServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = cli_env()
    env.update(WANDB_MODE="online", WANDB_API_KEY="k" * 40, WANDB_ERROR_REPORTING="false",
               WANDB_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}",
               HOME=str(tmp_path / "home"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "jaxrl_po.train", "--run-dir", str(run_dir), "--wandb", "--wandb-entity",
            "nobody-here", "--num-seeds", "1", "--num-envs", "8", "--num-steps", "4", "--num-minibatches", "2",
            "--total-timesteps", "64", "--no-compile-cache", "--no-progress"]
    try:
        res = subprocess.run(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=180)
    finally:
        server.shutdown()
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == "error: --wandb: cannot start a W&B run: entity nobody-here not found"
    assert "Traceback" not in res.stderr + res.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == ["wandb"]
    (failed,) = (run_dir / "wandb").glob("run-*")

    env["WANDB_MODE"] = "offline"
    res = subprocess.run(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["num_seeds"] == 1
    assert failed.is_dir() and len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
