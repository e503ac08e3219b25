"""The file paths inside data spec strings, so that a run folder finds its data again.

A run records its data spec with the path made absolute (the working folder may change) and
also relative to the run folder (the run folder and its data may move together); loading
takes whichever exists.
"""

from __future__ import annotations

import os
from pathlib import Path

_PREFIXED = ("mnist", "dsprites")  # name:PATH[...]


def split_path(spec: str) -> tuple[str, str, str] | None:
    """``(before, path, after)`` with ``spec == before + path + after``, or ``None`` when the
    spec names no file (``digits``, ``dsprites:5000``)."""
    name, sep, arg = spec.partition(":")
    if name == "torchvision":
        ds, sep2, root = arg.partition(":")
        return (f"torchvision:{ds}:", root, "") if sep2 and root else None
    if name in _PREFIXED and sep:
        if name == "dsprites":
            head, _, tail = arg.rpartition(":")
            if arg.isdigit():
                return None
            if head and tail.isdigit():
                return "dsprites:", head, f":{tail}"
        return f"{name}:", arg, ""
    if Path(spec).suffix in (".npz", ".npy"):
        return "", spec, ""
    return None


def portable_spec(spec: str, run_dir) -> dict:
    """``{"spec": ..., "spec_relative": ...}``: the spec with its path absolute, and relative to
    ``run_dir`` (``None`` when the spec names no file)."""
    parts = split_path(spec) if isinstance(spec, str) else None
    if parts is None:
        return {"spec": spec, "spec_relative": None}
    before, path, after = parts
    absolute = Path(path).expanduser().resolve()
    relative = os.path.relpath(absolute, Path(run_dir).expanduser().resolve())
    return {"spec": f"{before}{absolute}{after}", "spec_relative": f"{before}{relative}{after}"}


def resolve_spec(record: dict, run_dir) -> str:
    """The spec to load for a run's data ``record``: as stored when its file exists, else
    relative to ``run_dir`` when that exists (the run folder and data were moved together)."""
    spec = record["spec"]
    parts = split_path(spec)
    if parts is None or Path(parts[1]).expanduser().exists():
        return spec
    rel = record.get("spec_relative")
    rel_parts = split_path(rel) if rel else None
    if rel_parts is not None:
        candidate = Path(run_dir) / rel_parts[1]
        if candidate.exists():
            return f"{rel_parts[0]}{candidate.resolve()}{rel_parts[2]}"
    return spec  # the loader's error names the missing file
