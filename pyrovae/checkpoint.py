"""Checkpoints: written atomically, read without executing code.

A checkpoint is a dict of tensors and plain values saved with ``torch.save`` and read with
``torch.load(weights_only=True)``, so opening one never runs code from the file. It is written
to a temporary file in the same folder, flushed to disk, then renamed over the old one: a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyro
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

from .models.base import init_args_of, instantiate, plain_value, spec_of

log = logging.getLogger("pyrovae")

FORMAT = "pyrovae.checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def save(path: str | os.PathLike, payload: dict) -> Path:
    """Writes ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed
    and fsynced, then renamed over ``path``. A failed or interrupted write (disk full, the
    process killed) leaves the previous file at ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # a fixed name: a killed writer's leftover is reused
    payload = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"checkpoint: writing {path} failed ({e.strerror or e}); the "
                               f"previous checkpoint there, if any, is intact") from e
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (not supported on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Reads a checkpoint with ``weights_only=True``; refuses other files and newer formats."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save's zip archive or legacy pickle
        raise ValueError(f"checkpoint: {path} is not a readable pyrovae checkpoint (it is not a "
                         f"file torch.save wrote; it starts with bytes {head.hex() or 'none'})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError,
            ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError, OSError) as e:
        # weights_only=True refuses any pickle that would construct arbitrary objects, so a
        # tampered file fails here without running code; truncated files fail here too.
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e).lower() \
                or "Weights only load failed" in str(e):
            why = ("it holds objects other than tensors and plain values, which the safe loader "
                   "refuses; nothing in it was run")
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            why = f"corrupted or truncated: {first[:120]}"
        raise ValueError(f"checkpoint: {path} is not a readable pyrovae checkpoint "
                         f"({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a pyrovae checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {ckpt['version']}, newer than this pyrovae "
            f"reads ({VERSION}); upgrade pyrovae"
        )
    return ckpt


class CheckpointDir:
    """The checkpoints of one run: ``checkpoint.pt`` is always the newest; with ``keep > 1``
    the newest ``keep`` are also kept as ``checkpoint-step<N>.pt`` (``checkpoint.pt`` is a hard
    link to the newest, so nothing is written twice)."""

    def __init__(self, folder: str | os.PathLike, keep: int = 1):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep_checkpoints: expected a positive int, got {keep!r}")
        self.folder, self.keep = Path(folder), keep

    @property
    def latest(self) -> Path:
        return self.folder / FILENAME

    def _numbered(self) -> list[Path]:
        """Step-numbered checkpoints, newest first."""
        return sorted(self.folder.glob("checkpoint-step*.pt"), reverse=True)

    def save(self, payload: dict, step: int) -> Path:
        if self.keep == 1:
            return save(self.latest, payload)
        path = save(self.folder / f"checkpoint-step{step:09d}.pt", payload)
        tmp = self.folder / f".{FILENAME}.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy instead
            tmp.write_bytes(path.read_bytes())
        os.replace(tmp, self.latest)
        _fsync_dir(self.folder)
        for old in self._numbered()[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> tuple[dict, Path] | tuple[None, None]:
        """The newest checkpoint that loads, skipping (and logging) unreadable ones; ``(None,
        None)`` when there is none at all. Raises if checkpoints exist but none loads."""
        candidates = [p for p in [self.latest, *self._numbered()] if p.is_file()]
        errors = []
        for p in candidates:
            try:
                return load(p, map_location), p
            except ValueError as e:
                log.warning("skipping unreadable checkpoint: %s", e)
                errors.append(str(e))
        if errors:
            raise ValueError("checkpoint: no readable checkpoint in "
                             f"{self.folder}: " + "; ".join(errors))
        return None, None


def model_payload(model, extra_params: dict[str, torch.Tensor], *, init_args: dict | None = None,
                  strict: bool = False) -> dict:
    """What rebuilds a model: its spec, constructor arguments, module state and the
    ``pyro.param`` tensors kept outside its modules.

    ``model_config`` holds the constructor arguments (our models' config; for other classes
    what :func:`pyrovae.models.base.init_args_of` recovers, ``init_args`` first). They are
    checked against the weights by building the class once on PyTorch's meta device (no
    memory, no random draws; once per class and arguments): a default taken for an argument
    the model keeps no attribute of would otherwise rebuild a different model. When the
    arguments cannot be recovered or do not rebuild the weights, ``strict=True`` raises
    ``ValueError`` naming the argument and the fix, before anything is written; otherwise
    (the trainer's checkpoints, which must not stop a run) ``model_config`` is ``None``, the
    reason is logged once and kept as ``model_init["problem"]`` for the loader's error.

    ``extra_params`` maps names to the *unconstrained* tensors (what the trainer optimises);
    their constraints (by name, where Pyro names them) and constrained values come along, so a
    loader can register them in a fresh param store.
    """
    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    config, init = _constructor_record(model, init_args, strict)
    return {
        "model_spec": spec_of(model),
        "model_config": config,
        "model_init": init,
        "model_state": state,
        **params_payload(extra_params),
    }


def params_payload(unconstrained: dict[str, torch.Tensor]) -> dict:
    """``pyro_params`` (unconstrained, as the trainer restores them), ``pyro_param_constraints``
    (a name such as ``"positive"``, ``["interval", 0.0, 1.0]``, or ``None`` when Pyro's
    constraint modules do not name it) and ``pyro_param_values`` (constrained)."""
    known = pyro.get_param_store().get_state()["constraints"]
    raw, codes, values = {}, {}, {}
    for name, u in unconstrained.items():
        u = u.detach().clone()
        c = known.get(name, constraints.real)
        raw[name], codes[name] = u, encode_constraint(c)
        with torch.no_grad():
            values[name] = transform_to(c)(u).detach().clone()
    return {"pyro_params": raw, "pyro_param_constraints": codes, "pyro_param_values": values}


_BOUNDED = {"greater_than": ("lower_bound",), "greater_than_eq": ("lower_bound",),
            "less_than": ("upper_bound",), "interval": ("lower_bound", "upper_bound"),
            "half_open_interval": ("lower_bound", "upper_bound")}


def encode_constraint(c):
    """A constraint as a plain value (``None`` when it has no name we can rebuild it from)."""
    for name in dir(constraints):
        if not name.startswith("_") and getattr(constraints, name) is c:
            return name
    for name, fields in _BOUNDED.items():
        if type(c) is type(getattr(constraints, name)(*[0.0] * len(fields))):
            try:
                return [name, *(float(getattr(c, f)) for f in fields)]
            except (TypeError, ValueError, RuntimeError):  # tensor-valued bounds
                return None
    return None


def decode_constraint(code):
    """Inverse of :func:`encode_constraint` (``None`` for ``None``)."""
    if code is None:
        return None
    if isinstance(code, str):
        return getattr(constraints, code)
    return getattr(constraints, code[0])(*code[1:])


# Trial builds, by (class, arguments): the trainer checks the same arguments at every checkpoint.
_BUILT: dict = {}
_WARNED: set = set()


def _constructor_record(model, init_args, strict) -> tuple[dict | None, dict]:
    """(``model_config``, ``model_init``) for :func:`model_payload`."""
    if isinstance(model, (tuple, SimpleNamespace)):  # a (model_fn, guide_fn) pair: no class
        return None, {"sources": {}, "problem": None}
    info = init_args_of(model, init_args)  # bad init_args raise here, strict or not
    problem = None
    if info.args is None:
        problem = _unrecoverable(type(model), info)
    elif not info.from_config_class and isinstance(model, torch.nn.Module):
        problem = _rebuild_problem(type(model), info, model)
    if problem is None:
        return info.args, {"sources": info.sources, "problem": None}
    if strict:
        raise ValueError(f"save: {problem}")
    key = (spec_of(model), problem)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("checkpoint: %s (the checkpoint is written without them; it resumes "
                    "training, and pyrovae.load needs init_args)", problem)
    return None, {"sources": info.sources, "problem": problem}


def _fix(cls: type, values: dict) -> str:
    """How to give the constructor arguments ``values`` (name -> value, ``...`` if unknown)."""
    keep = "; ".join(f"self.{n} = {n}" for n in values) or "self.NAME = NAME"
    return (f"pass them, pyrovae.save(model, path, init_args={init_args_text(values)}), or "
            f"keep them on the model in {cls.__name__}.__init__ ({keep}) so they are found "
            f"by name")


def init_args_text(values: dict) -> str:
    """``{'d': 7, 'q': ...}``: an ``init_args`` to show in an error (``...`` where unknown)."""
    return "{" + ", ".join(f"{n!r}: {'...' if v is ... else repr(v)}"
                           for n, v in values.items()) + "}"


def _unrecoverable(cls: type, info) -> str:
    parts = []
    if info.missing:
        parts.append(f"the required argument(s) {info.missing} have no default and the model "
                     f"keeps no attribute of that name")
    for name, why in info.unsaveable.items():
        parts.append(f"argument {name!r}: {why}")
    return (f"cannot record the constructor arguments of {cls.__name__}: " + "; ".join(parts)
            + "; " + _fix(cls, dict.fromkeys([*info.missing, *info.unsaveable], ...)))


def _rebuild_problem(cls: type, info, model) -> str | None:
    """Why ``cls(**info.args)`` does not rebuild ``model`` (``None`` when it does).

    The rebuilt model must have the weights' shapes. When an argument was taken at its
    default, its plain attributes, those of every submodule included (``drop.p``,
    ``_sigma``), must also equal the model's: an argument that changes no shape shows there.
    Attributes are not compared when every argument was given or found by name, since they
    may legitimately change after construction (a step counter, an annealed weight)."""
    built = _trial_build(cls, info.args)
    call = f"{cls.__name__}({info.describe()})"
    if isinstance(built, str):
        return f"{call} cannot be built: {built}; " + _fix(cls, dict.fromkeys(info.args, ...))
    shapes, attrs = built
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    defaulted = {k: ... for k, v in info.sources.items() if v == "default"}
    diff = explain_mismatch(info.args, info.sources, shapes, actual,
                            built_as="the rebuilt one", actual_as="the model")
    if diff:
        guessed = {name.split("[")[0]: (guess if "[" not in name else ...)
                   for name, guess in suspected(info.args, shapes, actual)[:1]}
        return (f"the constructor arguments found for {cls.__name__}, {call}, do not rebuild "
                f"its weights: {diff}; "
                + _fix(cls, guessed or defaulted or dict.fromkeys(info.args, ...)))
    if defaulted:
        ours = plain_attributes(model)
        differ = [k for k in ours.keys() & attrs.keys() if not _same(ours[k], attrs[k])]
        if differ:
            k = sorted(differ)[0]
            # a default equal to the rebuilt attribute's value is the likely culprit (p=0.1
            # became drop.p = 0.1), and the model's value its likely true value
            guessed = {a: ours[k] for a in defaulted if _same(info.args[a], attrs[k])}
            names = ", ".join(guessed or defaulted)
            return (f"the constructor arguments found for {cls.__name__} do not rebuild it: "
                    f"{call} has {k} = {attrs[k]!r} where the model has {ours[k]!r}, so an "
                    f"argument taken at its default ({names}) probably differs; "
                    + _fix(cls, guessed or defaulted))
    return None


_MODULE_MACHINERY = frozenset(vars(torch.nn.Module())) | {
    "_pyro_name", "_pyro_context", "_pyro_params", "_pyro_samples"}


def plain_attributes(model: torch.nn.Module) -> dict:
    """``{"sub.attr": value}``: the plain-valued attributes of ``model`` and its submodules
    (``nn.Linear``'s ``in_features``, ``nn.Dropout``'s ``p``, a user's ``self._sigma``)."""
    out = {}
    for prefix, m in model.named_modules():
        for k, v in vars(m).items():
            if k in _MODULE_MACHINERY or k == "training":
                continue
            try:
                out[f"{prefix}.{k}" if prefix else k] = plain_value(v)
            except TypeError:
                pass
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    return a == b


def _trial_build(cls: type, args: dict) -> tuple[dict, dict] | str:
    """(state-dict shapes, :func:`plain_attributes`) of ``cls(**args)`` built on the meta
    device (on the CPU when the constructor cannot run there), or why it cannot be built. RNG
    states and Pyro's param store are left as found, so a checkpoint written mid-run does not
    change the run; results are cached by class and arguments."""
    key = (cls, repr(sorted(args.items())))
    if key in _BUILT:
        return _BUILT[key]
    np_state, py_state = np.random.get_state(), random.getstate()
    # A constructor that calls pyro.param would register meta tensors: give it a scratch store.
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        try:
            try:
                with torch.device("meta"):
                    built = instantiate(cls, args)
            except ValueError:
                raise
            except Exception:  # constructors that compute on tensors cannot run on meta
                built = instantiate(cls, args)
            result = ({k: tuple(v.shape) for k, v in built.state_dict().items()
                       if not torch.nn.parameter.is_lazy(v)}, plain_attributes(built))
        except ValueError as e:
            result = str(e)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    if len(_BUILT) >= 64:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[key] = result
    return result


def _int_leaves(args: dict):
    for name, v in args.items():
        if isinstance(v, int) and not isinstance(v, bool):
            yield name, v
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if isinstance(x, int) and not isinstance(x, bool):
                    yield f"{name}[{i}]", x


def suspected(args: dict, built: dict, actual: dict) -> list[tuple[str, int]]:
    """``[(argument, likely value)]``: the constructor arguments that probably differ between
    the model built from ``args`` (state-dict shapes ``built``) and the one the weights
    (``actual``) came from. An integer argument (or list element, ``hidden[0]``) scores for
    each size that differs and equals it (``d=5`` where a (5, 2) weight is (7, 2): ``d`` was
    probably 7) and, less, for each it divides (``q=2`` where a (4, 5) weight, ``2 * q`` rows,
    is (6, 5)). The best-scoring ones, with the value the weights suggest."""
    pairs = [(b, a) for k in sorted(built.keys() & actual.keys())
             if len(built[k]) == len(actual[k])
             for b, a in zip(built[k], actual[k]) if b != a]
    scored = []
    for name, v in _int_leaves(args or {}):
        guesses = [a for b, a in pairs if b == v]
        score = 2 * len(guesses)
        if v > 1:
            multiples = [a // (b // v) for b, a in pairs if b != v and b % v == 0
                         and a % (b // v) == 0]
            guesses += multiples
            score += len(multiples)
        if score:
            guess = Counter(guesses).most_common(1)[0][0]
            scored.append((score, name, guess))
    scored.sort(key=lambda t: -t[0])
    best = scored[0][0] if scored else 0
    return [(name, guess) for score, name, guess in scored if score == best]


def explain_mismatch(args: dict | None, sources: dict, built: dict, actual: dict, *,
                     built_as: str, actual_as: str) -> str:
    """One sentence on how the shapes ``built`` (of ``built_as``) and ``actual`` (of
    ``actual_as``) differ, naming the constructor argument that probably explains it ('' when
    they fit)."""
    shapes = [f"{k} is {actual[k]} in {actual_as} and {built[k]} in {built_as}"
              for k in actual if k in built and actual[k] != built[k]]
    missing = sorted(set(actual) - set(built))
    extra = sorted(set(built) - set(actual))
    parts = []
    if shapes:
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(shapes[0] + more)
    if missing:
        parts.append(f"{len(missing)} tensor(s) only in {actual_as}, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} tensor(s) only in {built_as}, e.g. {extra[0]}")
    if not parts:
        return ""
    text = "; ".join(parts)
    found = suspected(args, built, actual)
    for name, guess in found[:2]:
        top = name.split("[")[0]
        value = _leaf(args, name)
        text += f"; argument {name!r} probably differs (it is {value}; the weights suggest " \
                f"{guess})"
        if sources.get(top) == "default":
            text += f": it was taken at its default because the model keeps no self.{top}"
    return text


def _leaf(args: dict, name: str):
    top, _, rest = name.partition("[")
    return args[top] if not rest else args[top][int(rest[:-1])]


def restore_model(model, ckpt: dict, extra_params: dict[str, torch.Tensor] | None = None) -> None:
    """Loads a checkpoint's weights into ``model`` (checked to be the same kind of model)."""
    spec = spec_of(model)
    if ckpt.get("model_spec") not in (None, spec):
        raise ValueError(
            f"checkpoint: it holds a {ckpt['model_spec']!r} model, not a {spec!r} one"
        )
    if isinstance(model, torch.nn.Module):
        problem = _state_mismatch(model.state_dict(), ckpt["model_state"])
        if problem:
            raise ValueError(f"checkpoint: its weights do not fit this model: {problem} (it was "
                             f"saved with model_config {ckpt.get('model_config')})")
        model.load_state_dict(ckpt["model_state"])
    saved = ckpt.get("pyro_params", {})
    if extra_params is not None:
        missing = sorted(set(saved) - set(extra_params))
        if missing:
            raise ValueError(f"checkpoint: params {missing} are not in this model/guide")
        with torch.no_grad():
            for name, value in saved.items():
                extra_params[name].copy_(value)


def _state_mismatch(ours: dict, saved: dict) -> str:
    """One line describing how two state dicts differ ('' when they fit)."""
    missing = sorted(set(ours) - set(saved))
    extra = sorted(set(saved) - set(ours))
    shapes = [f"{k} is {tuple(saved[k].shape)} there and {tuple(v.shape)} here"
              for k, v in ours.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from it, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} tensor(s) this model lacks, e.g. {extra[0]}")
    return "; ".join(parts)


def load_model(path: str | os.PathLike, device="cpu"):
    """The model a checkpoint or run folder holds: :func:`pyrovae.load` (kept under its old
    name)."""
    from .saving import load as load_saved  # saving builds on this module

    return load_saved(path, device)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a run draws from: torch (CPU, CUDA), the data generator, NumPy, Python."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
