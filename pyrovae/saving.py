"""``pyrovae.save(model, path)`` and ``pyrovae.load(path)``: a trained model to a file and back.

The file is a checkpoint (:mod:`pyrovae.checkpoint`: written atomically, read with
``torch.load(weights_only=True)``, so loading one runs no code from it) holding the model's
class (``"vae"`` or ``"module:Class"``), its constructor arguments, its state dict and the
``pyro.param`` tensors it uses outside its modules. Loading imports the class, calls it with
those arguments, checks the weights fit and loads them. A run folder (``pyrovae train``'s or
``fit(checkpoint_dir=...)``'s) loads the same way.

Constructor arguments. Our models keep a dataclass ``config`` that rebuilds them. A class of
the user's usually keeps nothing of the kind: ``LinearGaussian(d=5, q=2)`` stores ``self.q``
and turns ``d`` into layer sizes. The arguments are recovered at save time, without asking the
class for anything: each parameter of ``__init__`` is taken from ``init_args=`` when given,
else from the model's ``config``, else from an attribute of the same name (``self.q = q``, the
common idiom), else from its default. Defaults are where this could go silently wrong
(``LinearGaussian(d=7)`` would come back with ``d=5``), so the class is built once from the
recovered arguments on PyTorch's meta device (no memory, no random draws) and must reproduce
the weights' shapes and, when a default was used, the plain attributes of the model and its
submodules (``nn.Dropout``'s ``p``, say); otherwise ``save`` refuses, naming the argument that
probably differs and the fix. We chose this over capturing arguments at construction (a mixin,
a decorator, a metaclass), which is opt-in, cannot help a model written or trained before it,
and would reach into Pyro's own metaclass for ``PyroModule``: with recovery, the README's class
saves as written, and explicit ``init_args`` covers what recovery cannot see — an argument the
model neither keeps under its name nor shows in any shape or attribute.

Classes defined in ``__main__`` (a script, a notebook) are recorded as ``__main__:Name``. They
load in any process whose ``__main__`` defines the class again (the same session, a notebook
run again); elsewhere :func:`load` says so and gives the fix: move the class into an
importable module, or pass it, ``load(path, cls=Name)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyro
import torch
from pyro import poutine

from . import checkpoint
from ._runtime import resolve_device
from .init_args import InitArgs, explain_mismatch, init_args_of, init_args_text, suspected
from .protocol import input_names, instantiate, resolve

log = logging.getLogger("pyrovae")

RUN_CONFIG = "config.json"  # pyrovae.run.CONFIG: a run folder's settings (tests check they agree)


def save(model, path: str | os.PathLike, *, init_args: dict | None = None, params=None,
         data=None) -> Path:
    """Writes ``model`` to the checkpoint file ``path`` (a folder: ``path/checkpoint.pt``);
    returns the file's path. :func:`load` reads it back.

    :param init_args: constructor arguments by name, for those the model does not keep under
        their own name (see the module docstring); they override what is found on the model.
        Not for our models, which are rebuilt from their ``config``.
    :param params: ``pyro.param`` tensors the model uses outside its modules: names in Pyro's
        param store, or a dict of name to unconstrained tensor. :func:`pyrovae.fit`'s
        checkpoints find these themselves.
    :param data: a batch (a tensor ``x`` or a dict of fields) on which ``model`` and ``guide``
        are run once, in a forked RNG, to find those ``pyro.param`` tensors.

    Raises before writing anything when the constructor arguments cannot be recovered or do
    not rebuild the model. The file is a model, not a training state: ``fit(resume=...)``
    needs the trainer's own checkpoints.
    """
    if isinstance(model, tuple):
        raise TypeError("model: a (model_fn, guide_fn) pair has no class to rebuild; its "
                        "parameters live in Pyro's param store: save that with "
                        "pyro.get_param_store().save(path)")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (a PyroModule, say), got "
                        f"{type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {path!r}")
    path = Path(path)
    if path.is_dir():
        if (path / RUN_CONFIG).exists():
            raise FileExistsError(
                f"path: {path} is a run folder; replacing its {checkpoint.FILENAME} would lose "
                f"the training state `--resume` continues from; save to another file")
        path = path / checkpoint.FILENAME
    extra = {**_named_params(params), **({} if data is None else external_params(model, data))}
    if params is None and data is None:
        _warn_unsaved_params(model)
    payload = checkpoint.model_payload(model, extra, init_args=init_args, strict=True)
    return checkpoint.save(path, payload)


def _warn_unsaved_params(model) -> None:
    """Logs the param store's ``pyro.param`` tensors that belong to no module: ``save`` cannot
    tell whether ``model`` uses them without running it (``params=`` / ``data=`` say so)."""
    own = {id(p) for p in model.parameters()}
    loose = sorted(n for n, u in pyro.get_param_store().get_state()["params"].items()
                   if not isinstance(u, torch.nn.Parameter) and id(u) not in own)
    if loose:
        log.warning("save: Pyro's param store holds %s, which are not saved with the model; if "
                    "its model or guide uses them, pass params=%r (or data=a batch to find "
                    "them)", loose, loose)


def _named_params(params) -> dict[str, torch.Tensor]:
    """``params`` of :func:`save` as ``{name: unconstrained tensor}``."""
    if params is None:
        return {}
    store = pyro.get_param_store()
    if isinstance(params, dict):
        bad = [k for k, v in params.items() if not isinstance(k, str) or not torch.is_tensor(v)]
        if bad:
            raise TypeError(f"params: expected a dict of name to tensor; {bad[0]!r} maps to "
                            f"{type(params[bad[0]]).__name__}")
        return dict(params)
    if isinstance(params, str) or not hasattr(params, "__iter__"):
        raise TypeError(f"params: expected names in Pyro's param store or a dict of tensors, "
                        f"got {params!r}")
    names = list(params)
    absent = [n for n in names if n not in store]
    if absent:
        raise ValueError(f"params: {absent} are not in Pyro's param store (it holds "
                         f"{sorted(store.keys())[:10]})")
    return {n: store[n].unconstrained() for n in names}


def external_params(model, data) -> dict[str, torch.Tensor]:
    """The ``pyro.param`` tensors (unconstrained) that ``model.guide`` and ``model.model`` use
    outside the model's own modules, found by running both once on ``data`` (a tensor ``x`` or
    a dict of batch fields) in a forked RNG, with Pyro's validation off."""
    batch = {"x": data} if torch.is_tensor(data) else data
    if not isinstance(batch, dict):
        raise TypeError(f"data: expected a tensor or a dict of batch fields, got "
                        f"{type(data).__name__}")
    kwargs = {k: batch[k] for k in input_names(model, batch)}
    own = {id(p) for p in model.parameters()}
    own_names = set(model.state_dict())
    with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False), \
            poutine.block(), poutine.trace(param_only=True) as capture:
        guide_tr = poutine.trace(model.guide).get_trace(**kwargs)
        poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(**kwargs)
    out = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        u = value.unconstrained() if hasattr(value, "unconstrained") else value
        # Names of a PyroModule's parameters are its state-dict keys; pyro.module's carry $$$.
        if id(u) in own or id(value) in own or name in own_names or "$$$" in name:
            continue
        out[name] = u
    return out


def load(path: str | os.PathLike, device="cpu", *, cls: type | None = None,
         init_args: dict | None = None):
    """The model saved at ``path``, rebuilt, its weights loaded, on ``device``, in eval mode.

    ``path`` is a checkpoint file or a folder holding ``checkpoint.pt`` (a run folder, or
    ``fit``'s ``checkpoint_dir``); a run folder's ``config.json`` supplies the model and its
    configuration when the checkpoint lacks them (checkpoints written before they recorded
    constructor arguments). The ``pyro.param`` tensors saved with the model are put into
    Pyro's global param store, under their names, with their constraints.

    :param cls: the model's class, for one the file names but this process cannot import: one
        defined in ``__main__`` (a script, a notebook) when it was saved, or since moved.
    :param init_args: constructor arguments by name, overriding the saved ones (for a
        checkpoint that could not record them).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file or run folder path, got {path!r}")
    if cls is not None and not isinstance(cls, type):
        raise TypeError(f"cls: expected the model's class, got {cls!r}")
    if init_args is not None and not isinstance(init_args, dict):
        raise TypeError(f"init_args: expected a dict of constructor arguments by name, got "
                        f"{init_args!r}")
    dev = resolve_device(device)
    path = Path(path)
    file = path / checkpoint.FILENAME if path.is_dir() else path
    ckpt = checkpoint.load(file)
    run_cfg = {}
    if path.is_dir() and (path / RUN_CONFIG).is_file():
        try:
            run_cfg = json.loads((path / RUN_CONFIG).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"load: {path / RUN_CONFIG} is not valid JSON ({e})") from None
    model = rebuild(ckpt, cls=cls, spec=run_cfg.get("model"), config=run_cfg.get("model_config"),
                    init_args=init_args, where=str(file))
    if isinstance(model, torch.nn.Module):
        model.to(dev)
        model.eval()
    restore_params(ckpt, dev)
    return model


def rebuild(ckpt: dict, *, cls: type | None = None, spec: str | None = None,
            config: dict | None = None, init_args: dict | None = None, input_shape=None,
            where: str = "the checkpoint"):
    """The model a checkpoint dict holds, built and its weights loaded (on the CPU, in the
    mode the constructor leaves it).

    The class is ``cls``, else the checkpoint's spec, else ``spec``; the constructor arguments
    are the checkpoint's, else ``config`` (a run folder's), updated with ``init_args``.
    ``input_shape`` fills an ``input_shape`` argument the arguments leave out (as in
    :func:`pyrovae.models.build`). Raises ``ValueError`` naming the class and the fix when it
    cannot be imported, and the constructor argument that probably differs when the weights do
    not fit.
    """
    spec = ckpt.get("model_spec") or spec
    args, from_run = ckpt.get("model_config"), False
    if args is None and config is not None:
        args, from_run = config, True
    args = None if args is None else dict(args)
    init = ckpt.get("model_init") or {}
    sources = dict(init.get("sources") or {})
    if init_args:
        args = {**(args or {}), **init_args}
        sources.update(dict.fromkeys(init_args, "init_args"))
    if cls is None:
        if spec is None:
            raise ValueError(f"load: {where} records no model class; pass it: "
                             f"pyrovae.load(path, cls=MyModel)")
        cls = _import_class(spec, where)
    why = _why(args, init.get("problem"), from_run)
    try:
        model = instantiate(cls, args, name=spec or cls.__name__, input_shape=input_shape)
    except ValueError as e:
        raise ValueError(f"load: {e}{why}") from None
    if isinstance(model, torch.nn.Module):
        saved = ckpt.get("model_state", {})
        built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        actual = {k: tuple(v.shape) for k, v in saved.items()}
        shown = args
        if shown is None:  # what the constructor used: its defaults
            found = init_args_of(model)
            shown, sources = found.args or {}, {k: "default" for k in found.args or {}}
        call = f"{cls.__name__}({_arguments(shown, sources)})"
        diff = explain_mismatch(shown, sources, built, actual, built_as="this model",
                                           actual_as="the checkpoint")
        if diff:
            guessed = {n.split("[")[0]: (g if "[" not in n else ...)
                       for n, g in suspected(shown, built, actual)[:1]}
            raise ValueError(
                f"load: the weights in {where} do not fit {call}: {diff}{why}; pass the "
                f"arguments they were saved with: pyrovae.load(path, init_args="
                f"{init_args_text(guessed or dict.fromkeys(shown, ...))})")
        model.load_state_dict(saved)
    return model


def _arguments(args: dict | None, sources: dict) -> str:
    if not args:
        return ""
    return InitArgs(args, {k: sources.get(k, "config") for k in args}, [], {}).describe()


def _why(args, problem, from_run) -> str:
    """Why the constructor arguments may be wrong, for the error text ('' when no reason)."""
    if problem:
        return f" (when it was saved: {problem})"
    if args is None:
        return " (the checkpoint records no constructor arguments; defaults were used)"
    if from_run:
        return " (its constructor arguments come from the run folder's config.json)"
    return ""


def _import_class(spec: str, where: str) -> type:
    """``resolve(spec)`` with errors that say what to do: a class saved from ``__main__`` is
    found only in a process whose ``__main__`` defines it again (a notebook re-run)."""
    module, _, qualname = spec.partition(":")
    try:
        return resolve(spec)
    except ValueError as e:
        if module == "__main__":
            raise ValueError(
                f"load: {where} holds a {qualname!r} model whose class was defined in "
                f"__main__ (a script or notebook) when it was saved, and this process's "
                f"__main__ has no {qualname!r}. Move the class into an importable module "
                f"(mymodels.py, say, then import it from there and save again), or pass the "
                f"class: pyrovae.load(path, cls={qualname.rsplit('.', 1)[-1]})") from None
        if "<locals>" in qualname:
            raise ValueError(
                f"load: {where} holds a {qualname!r} model whose class was defined inside a "
                f"function, which cannot be imported; pass the class: "
                f"pyrovae.load(path, cls=...)") from None
        raise ValueError(f"load: {e}; make its module importable (on sys.path), or pass the "
                         f"class: pyrovae.load(path, cls=...)") from None


def restore_params(ckpt: dict, device=None) -> list[str]:
    """Puts a checkpoint's ``pyro.param`` tensors into Pyro's param store (replacing entries of
    the same name) with their constraints; returns their names. Checkpoints that predate
    constraint records hold unconstrained values only: those are registered as they are,
    which is right for unconstrained parameters; a constrained one is then logged."""
    raw = ckpt.get("pyro_params") or {}
    values = ckpt.get("pyro_param_values")
    codes = ckpt.get("pyro_param_constraints") or {}
    store = pyro.get_param_store()
    for name, u in raw.items():
        c = checkpoint.decode_constraint(codes.get(name))
        if values is None:
            log.warning("load: the checkpoint holds pyro.param %r without its constraint; it "
                        "is registered unconstrained", name)
        elif c is None:
            log.warning("load: pyro.param %r had a constraint pyrovae cannot name; it is "
                        "registered unconstrained, with its saved value", name)
        value = u if values is None else values[name]
        if device is not None:
            value = value.to(device)
        if name in store:
            del store[name]
        pyro.param(name, value.detach().clone(), **({} if c is None else {"constraint": c}))
    return list(raw)


__all__ = ["external_params", "load", "rebuild", "restore_params", "save"]


def load_model(path: str | os.PathLike, device="cpu"):
    """The model a checkpoint or run folder holds: :func:`load` under its older name."""
    return load(path, device)
