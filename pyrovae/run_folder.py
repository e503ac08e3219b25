"""Run folders on disk: their file names, JSON written atomically, and a trained run's model
and data loaded back. Below :mod:`pyrovae.run` (which trains into them) and
:mod:`pyrovae.analysis` (which analyses them), so both can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import checkpoint, saving
from . import data as data_mod

CONFIG = "config.json"
METRICS = "metrics.json"
INFERENCE_DATA = "inference_data.nc"


def write_json(path: Path, obj) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"run: {path} is missing; is this a pyrovae run folder?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"run: {path} is not valid JSON ({e})") from None


def load_data(cfg: dict, run_dir) -> data_mod.Splits:
    """A run's data splits as it trained on them (the data file found as stored, or relative
    to the run folder when both were moved)."""
    d = cfg["data"]
    splits = data_mod.load(data_mod.resolve_spec(d, run_dir), seed=d["seed"],
                           valid_size=d.get("valid_size"))
    return splits.binarized(d["binarize"], d["seed"])


def load_run(run) -> tuple[object, data_mod.Splits, dict]:
    """(model with trained weights, data splits, config) of a run folder."""
    run = Path(run)
    cfg = read_json(run / CONFIG)
    splits = load_data(cfg, run)
    # The checkpoint's constructor arguments, else config.json's (older checkpoints lack them);
    # its pyro.param tensors go into the param store.
    ckpt = checkpoint.load(run / checkpoint.FILENAME)
    model = saving.rebuild(ckpt, spec=cfg["model"], config=cfg["model_config"],
                           input_shape=splits.train.event_shape, where=str(run))
    saving.restore_params(ckpt)
    model.eval()
    return model, splits, cfg


