"""Read back what an offline W&B run recorded: the records of its run-*.wandb file (LevelDB log format)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7  # a chunk's checksum (4 bytes), length (2) and type (1); the file opens with ":W&B", magic and version


def _chunks(data: bytes):
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # the rest of a block too short for a chunk is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if kind == 0:
            position += left
            continue
        chunk = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


def offline_run(run_dir: Path) -> dict:
    """{"name", "project", "config" (dict), "history" (list of dicts by step), "exit_code"} of the run under run_dir/wandb."""
    from wandb.proto import wandb_internal_pb2
    [path] = Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    found = {"history": [], "config": {}, "exit_code": None}
    for chunk in _chunks(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["name"], found["project"] = record.run.display_name, record.run.project
            found["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            found["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            found["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in record.history.item})
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return found
