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

MODELS: dict[str, type] = {}


def registrar(table: dict, what: str):
    """A decorator factory ``register(name)`` that files the decorated class or function in
    ``table`` under ``name`` (refusing a name taken by another object) and returns it."""

    def register(name: str):
        def deco(obj):
            if name in table and table[name] is not obj:
                raise ValueError(f"{what} name {name!r} is already registered to {table[name]}")
            table[name] = obj
            return obj

        return deco

    return register


_register = registrar(MODELS, "model")


def register_model(name: str):
    """Class decorator: makes the model available to the CLI and checkpoints as ``name``."""

    def deco(cls):
        _register(name)(cls)
        cls.registered_name = name
        return cls

    return deco


def _import_all_models() -> None:
    # Every module in pyrovae.models registers itself on import: adding a model is one file.
    # Found by name, as a user's "module:Name" is: the registry sits below the families.
    pkg = importlib.import_module("pyrovae.models")
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")


def import_path(spec: str, what: str):
    """The object an import path ``"package.module:Name"`` names (``Name`` may be dotted);
    modules in the working folder resolve, as with ``python -m``. ``what`` names the argument
    in errors."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"{what} {spec!r}: expected an import path 'module:Name'")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"{what} {spec!r}: cannot import module {mod_name!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def resolve(spec: str):
    """A registered model name (``"vae"``) or an import path ``"package.module:Name"``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model: expected a registered name or 'module:Name', got {spec!r}")
    if ":" in spec:
        return import_path(spec, "model")
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


def config_fields(obj) -> list[tuple[str, object, str]]:
    """``(name, default, help)`` for each setting of a model class (its ``config_class``'s
    fields, help from the comment after each field in the source) or of any other callable
    (its keyword parameters); what ``pyrovae list NAME`` prints."""
    config_class = getattr(obj, "config_class", None)
    if config_class is None:
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            return []
        return [(p.name, None if p.default is p.empty else p.default, "")
                for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    comments = _field_comments(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append((f.name, default, comments.get(f.name, "")))
    return out


def _field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` from ``name: type = default  # comment`` lines of a dataclass."""
    import io
    import tokenize

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out, line_names = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_names:
            line_names[tok.start[0]] = tok.string  # a field name at class-body indentation
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_names:
            out.setdefault(line_names[tok.start[0]], tok.string.lstrip("# ").strip())
    return out
