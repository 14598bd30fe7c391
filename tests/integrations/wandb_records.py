"""Read a W&B offline run file (`run-<id>.wandb`) back: the LevelDB-style record log W&B writes,
parsed with W&B's own protobuf schema. (The W&B package no longer ships a Python reader.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", ident
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, FIRST):
            buf = chunk
        else:
            buf += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def read_run(path: Path) -> dict:
    """{"run": {project, name, tags, config}, "history": [{key: value}], "config": {...}}."""
    out: dict = {"run": None, "history": [], "config": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            config = {i.key: json.loads(i.value_json) for i in r.run.config.update}
            out["run"] = {
                "project": r.run.project,
                "name": r.run.display_name,
                "entity": r.run.entity,
                "tags": list(r.run.tags),
                "id": r.run.run_id,
            }
            out["config"].update(config)
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            )
    return out
