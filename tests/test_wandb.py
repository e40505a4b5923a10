"""Real W&B in offline mode: read back, from the run's own .wandb file, what train.py logged;
resuming continues the run."""

import json
import os
import struct
import subprocess
import sys

from conftest import ONE_THREAD, ROOT, read_jsonl, train_args
from wandb.proto import wandb_internal_pb2

ARGS = [
    "--dtype=float32",
    "--eval_interval=10",
    "--eval_iters=3",
    "--log_interval=5",
    "--wandb_log=True",
    "--wandb_project=tiny",
]


def wandb_records(path):
    """The protobuf records of a .wandb file (LevelDB log format: 32 KiB blocks of CRC-framed
    chunks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a FULL record, or the LAST chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def read_run(run_dir):
    """(run id, config, {step: {key: value}}) as logged."""
    (path,) = run_dir.glob("run-*.wandb")
    run_id, config, history = None, {}, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config.update(
                {item.key: json.loads(item.value_json) for item in record.run.config.update}
            )
        elif kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            history.setdefault(row["_step"], {}).update(row)
    return run_id, config, history


def run_train(char_data, out, home, *extra, wandb_mode=None):
    # no API key anywhere
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(ONE_THREAD, HOME=str(home), WANDB_SILENT="true")
    if wandb_mode:
        env["WANDB_MODE"] = wandb_mode
    args = train_args(char_data, out, *ARGS, *extra)
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def test_wandb_offline_logs_everything_and_resume_continues_the_run(char_data, tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()  # an empty HOME: no ~/.netrc, no wandb settings, so no API key
    first = run_train(char_data, out, home, "--max_iters=20", wandb_mode="offline")
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run_id, config, history = read_run(run_dir)
    saved_config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in saved_config} == saved_config

    metrics = read_jsonl(out / "metrics.jsonl")
    for m in metrics:
        logged = history[m["iter"]]
        assert logged["train/loss"] == m["train_loss"] and logged["val/loss"] == m["val_loss"]
        assert logged["tokens"] == m["tokens"]
        if m["iter"] < 20:  # loss.png is drawn from the third evaluation on
            assert "loss_plot/path" not in logged
            continue
        image = run_dir / "files" / logged["loss_plot/path"]
        assert logged["loss_plot/_type"] == "image-file" and image.read_bytes()[:4] == b"\x89PNG"
    for it in (5, 10, 15, 20):
        logged = history[it]
        assert logged["tok_per_s"] > 0 and 0 < logged["mfu"] < 1 and logged["lr"] > 0
        line = (
            f"iter {it}: loss {logged['train/loss_step']:.4f}, lr {logged['lr']:.2e}, "
            f"grad norm {logged['grad_norm']:.4f},"
        )
        assert line in first.stdout

    # no WANDB_MODE and no API key: offline on its own, and the resumed run keeps the run id
    second = run_train(char_data, out, home, "--max_iters=30", "--init_from=resume")
    assert "could not reach" not in second.stderr
    (resumed_dir,) = set((out / "wandb").glob("offline-run-*")) - {run_dir}
    resumed_id, _, resumed_history = read_run(resumed_dir)
    assert resumed_id == run_id and resumed_dir.name.endswith(run_id)
    assert resumed_history[30]["val/loss"] == read_jsonl(out / "metrics.jsonl")[-1]["val_loss"]
    assert min(resumed_history) > 20  # it continued; it did not start over
