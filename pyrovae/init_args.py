"""Constructor arguments of a model: :func:`init_args_of` reads them off the instance (nothing
built or run); :func:`constructor_record` is what a checkpoint keeps of them, after a trial
build on PyTorch's meta device reproduced the weights' shapes (:mod:`pyrovae.saving`: why)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import random
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pyro
import torch

from .protocol import config_of, instantiate, spec_of

log = logging.getLogger("pyrovae")

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



# Trial builds, by (class, arguments): the trainer checks the same arguments at every checkpoint.
_BUILT: dict = {}
_WARNED: set = set()


def constructor_record(model, init_args, strict) -> tuple[dict | None, dict]:
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
