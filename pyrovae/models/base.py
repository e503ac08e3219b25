"""What a model is to the rest of pyrovae, and how to call one.

A *model* is any object with ``model`` and ``guide`` callables holding Pyro primitives (a
``PyroModule`` usually), or a ``(model_fn, guide_fn)`` tuple. Nothing else is required: the
trainer, metrics, analysis and CLI work from Pyro traces. Optional extras a model may have:

- ``config``: a dataclass (or dict) that rebuilds it, with ``config_class`` on the class;
- ``check_data(x, name)``: raises ``ValueError`` for data the model cannot observe;
- ``inputs``: the batch fields model and guide take (default: read from ``model``'s signature).

Batches are dicts (``x``, ``y``, ``index``); a field goes to model and guide when their
signature names it, so a conditional model that takes ``y`` gets labels and a VAE does not.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import sys
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

MODELS: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: makes the model available to the CLI and checkpoints as ``name``."""

    def deco(cls):
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name]}")
        MODELS[name] = cls
        cls.registered_name = name
        return cls

    return deco


def _import_all_models() -> None:
    # Every module in pyrovae.models registers itself on import: adding a model is one file.
    import pyrovae.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")


def resolve(spec: str):
    """A registered model name (``"vae"``) or an import path ``"package.module:Name"``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model: expected a registered name or 'module:Name', got {spec!r}")
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
        if "" not in sys.path:  # as `python -m` does: modules in the working folder resolve
            sys.path.insert(0, "")
        try:
            obj = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"model {spec!r}: cannot import module {mod_name!r}: {e}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"model {spec!r}: module {mod_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return obj
    _import_all_models()
    try:
        return MODELS[spec]
    except KeyError:
        raise ValueError(
            f"model: unknown name {spec!r}; registered: {sorted(MODELS)} "
            f"(or give an import path 'module:Name')"
        ) from None


def spec_of(model) -> str | None:
    """The spec that :func:`resolve` turns back into ``type(model)`` (``None`` for a tuple)."""
    if isinstance(model, tuple):
        return None
    cls = type(model)
    name = getattr(cls, "registered_name", None)
    if name and MODELS.get(name) is cls:
        return name
    return f"{cls.__module__}:{cls.__qualname__}"



def resolve_config(config, cls: type, overrides: dict):
    """A model's config: ``config`` (default ``cls()``), type-checked, with ``overrides``
    applied through ``dataclasses.replace`` (so the config's own checks run on the result)."""
    config = cls() if config is None else config
    if not isinstance(config, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"config: expected {article} {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config

def to_jsonable(obj):
    """Dataclasses, tuples and dicts as plain JSON values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"config value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def config_of(model) -> dict | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    return to_jsonable(cfg)


def build(spec: str, config: dict | None = None, *, input_shape=None):
    """Instantiates the model named by ``spec`` from a config dict (see :func:`instantiate`)."""
    return instantiate(resolve(spec), config, name=spec, input_shape=input_shape)


def instantiate(cls: type, config: dict | None = None, *, name: str | None = None,
                input_shape=None):
    """``cls`` built from a config dict.

    With a ``config_class`` the dict fills that dataclass (unknown keys are an error);
    otherwise it holds ``__init__``'s arguments by name (positional-only ones are passed by
    position). ``input_shape`` fills a field or argument of that name when the config leaves
    it out. ``name`` is how errors call the model (its spec; default the class name).
    """
    name = cls.__name__ if name is None else name
    config = dict(config or {})
    config_class = getattr(cls, "config_class", None)
    params = {}
    if config_class is not None:
        names = {f.name for f in dataclasses.fields(config_class)}
    else:
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            params = {}
        names = set(params)
    if input_shape is not None and "input_shape" in names and "input_shape" not in config:
        config["input_shape"] = tuple(input_shape)
    if config_class is not None:
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(
                f"model {name!r}: unknown config key(s) {unknown}; {config_class.__name__} "
                f"has {sorted(names)}"
            )
        return cls(config_class(**config))
    positional = [config.pop(p.name) for p in params.values()
                  if p.kind is p.POSITIONAL_ONLY and p.name in config]
    try:
        return cls(*positional, **config)
    except TypeError as e:
        raise ValueError(f"model {name!r}: cannot construct it from config {config}: {e}") from None


# --- constructor arguments of a model that keeps no config ----------------------------------
PLAIN = "None, bool, int, float, str, and lists, tuples and dicts of them"


def plain_value(value):
    """``value`` as a plain value a checkpoint can hold and ``torch.load(weights_only=True)``
    reads back (NumPy scalars and ``torch.Size`` become Python ones); raises ``TypeError``
    for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):  # torch.Size is a tuple: it becomes a plain one
        items = [plain_value(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: plain_value(v) for k, v in value.items()}
    raise TypeError(f"a {type(value).__name__}, not a plain value ({PLAIN})")


@dataclasses.dataclass
class InitArgs:
    """What rebuilds a model: ``cls(**args)`` (or ``cls(config_class(**args))``).

    ``sources`` says where each argument came from: ``"config"`` (the model's ``config``),
    ``"init_args"`` (given by the caller), ``"attribute"`` (``model.<name>``) or ``"default"``
    (``__init__``'s default, because the model keeps no attribute of that name). ``missing``
    names required arguments found nowhere, ``unsaveable`` maps arguments whose value a
    checkpoint cannot hold to the reason; ``args`` is ``None`` when either is non-empty.
    """

    args: dict | None
    sources: dict[str, str]
    missing: list[str]
    unsaveable: dict[str, str]
    from_config_class: bool = False

    def describe(self) -> str:
        """``d=5 (default), q=3 (self.q)``: each argument with where it came from."""
        where = {"attribute": "self.{}", "default": "default", "init_args": "init_args",
                 "config": "config"}
        return ", ".join(f"{k}={v!r} ({where[self.sources[k]].format(k)})"
                         for k, v in (self.args or {}).items())


def _own_value(model, name: str):
    """``model.<name>`` when the instance stores it (or the class computes it as a property);
    a marker for none. Read without ``getattr`` on the instance first, so a ``PyroSample``
    attribute of a ``PyroModule`` is not drawn and submodules/parameters are not mistaken for
    arguments."""
    d = getattr(model, "__dict__", {})
    if name in d:
        return d[name]
    if isinstance(inspect.getattr_static(type(model), name, None), property):
        try:
            return getattr(model, name)
        except Exception:  # a property that fails tells us nothing about the argument
            return _NOTHING
    return _NOTHING


_NOTHING = object()


def init_args_of(model, init_args: dict | None = None) -> InitArgs:
    """The constructor arguments that rebuild ``model``, read off the instance (nothing is
    built or run here).

    Our models (a class with ``config_class``) are rebuilt from their ``config``. For any other
    class each parameter of ``__init__`` is taken, in this order, from ``init_args`` (the
    caller's), from the model's ``config`` dict or dataclass when it has one, from an attribute
    of the same name (``self.q = q``, the usual idiom), else from its default. ``*args`` and
    ``**kwargs`` take only what ``init_args`` or ``config`` give them. Nothing here can tell
    whether an attribute still holds the argument, or whether a default is the value used:
    :func:`pyrovae.checkpoint.model_payload` checks the result against the weights.
    """
    cls = type(model)
    if isinstance(model, tuple):
        return InitArgs(None, {}, [], {})
    given = {} if init_args is None else init_args
    if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
        raise TypeError(f"init_args: expected a dict of constructor arguments by name, got "
                        f"{init_args!r}")
    for name, value in given.items():
        try:
            plain_value(value)
        except TypeError as e:
            raise TypeError(f"init_args: {name!r} is {e}") from None
    config_class = getattr(cls, "config_class", None)
    if config_class is not None:
        if given:
            raise ValueError(
                f"init_args: a {cls.__name__} is rebuilt from its config "
                f"({config_class.__name__}); init_args is for classes that keep none, got "
                f"{sorted(given)}")
        cfg = config_of(model)
        return InitArgs(cfg, dict.fromkeys(cfg or {}, "config"), [], {}, from_config_class=True)
    try:
        params = dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        params = {}
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(given) - set(named))
    if unknown and not takes_kwargs:
        raise ValueError(f"init_args: {cls.__name__}.__init__ has no parameter(s) {unknown}; "
                         f"it takes {sorted(named)}")
    config = getattr(model, "config", None) if "config" not in named else None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    config = config if isinstance(config, dict) else {}
    args, sources, missing, unsaveable = {}, {}, [], {}

    def take(name, value, source):
        try:
            args[name] = plain_value(value)
            sources[name] = source
        except TypeError as e:
            unsaveable[name] = f"{'self.' + name if source == 'attribute' else source} is {e}"

    for name, p in named.items():
        if name in given:
            take(name, given[name], "init_args")
        elif name in config:
            take(name, config[name], "config")
        elif (value := _own_value(model, name)) is not _NOTHING and not _is_machinery(value) \
                and not (value is p.default and not _is_plain(value)):
            take(name, value, "attribute")
        elif p.default is not p.empty:
            try:  # a plain default is recorded, so a later change of the default is no issue
                args[name] = plain_value(p.default)
                sources[name] = "default"
            except TypeError:  # a default such as torch.nn.ReLU: the constructor supplies it
                pass
        else:
            missing.append(name)
    if takes_kwargs:
        for name in sorted((set(config) | set(given)) - set(named)):
            take(name, given.get(name, config.get(name)),
                 "init_args" if name in given else "config")
    ok = not missing and not unsaveable
    return InitArgs(args if ok else None, sources, missing, unsaveable)


def _is_plain(value) -> bool:
    try:
        plain_value(value)
        return True
    except TypeError:
        return False


def _is_machinery(value) -> bool:
    """A submodule, tensor or Pyro sample spec kept under an argument's name (``self.encoder =
    make_encoder(encoder)``) is what the argument became, not the argument."""
    return isinstance(value, (torch.nn.Module, torch.Tensor)) or \
        type(value).__name__ in ("PyroSample", "PyroParam")


def as_model(obj):
    """Checks ``obj`` is a model/guide pair and returns it (a tuple becomes an object)."""
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        return SimpleNamespace(model=obj[0], guide=obj[1])
    missing = [a for a in ("model", "guide") if not callable(getattr(obj, a, None))]
    if missing:
        raise TypeError(
            f"model: expected an object with callable 'model' and 'guide' (e.g. a PyroModule) "
            f"or a (model_fn, guide_fn) tuple; {type(obj).__name__} lacks {missing}"
        )
    return obj


def _accepted(fn: Callable) -> tuple[list[str], list[str], bool]:
    """(all named parameters, required ones, takes **kwargs) of ``fn``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], [], True
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return named, required, var_kw


def input_names(model, batch_keys) -> tuple[str, ...]:
    """The batch fields passed to ``model.model`` and ``model.guide`` (see module docstring)."""
    declared = getattr(model, "inputs", None)
    batch_keys = list(batch_keys)
    if declared is not None:
        names = tuple(declared)
    else:
        named, required, var_kw = _accepted(model.model)
        names = tuple(k for k in batch_keys if k in named)
        if not names and var_kw:
            names = ("x",)
        missing = [r for r in required if r not in batch_keys]
        if missing:
            raise ValueError(
                f"model.model requires argument(s) {missing}, which the data does not provide "
                f"(its batches have {batch_keys})"
            )
    absent = [n for n in names if n not in batch_keys]
    if absent:
        raise ValueError(f"model.inputs names {absent}, which the data does not provide "
                         f"(its batches have {batch_keys})")
    g_named, g_required, g_var_kw = _accepted(model.guide)
    if not g_var_kw:
        extra = [n for n in names if n not in g_named]
        if extra:
            raise ValueError(
                f"model.guide does not take argument(s) {extra} that model.model takes; Pyro "
                f"calls both with the same arguments"
            )
    return names


def dumps_config(config: dict) -> str:
    return json.dumps(to_jsonable(config), indent=2, sort_keys=True)
