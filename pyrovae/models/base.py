"""The model protocol and registry, defined in :mod:`pyrovae.protocol` (the trainer, metrics and
checkpoints use it without importing any model family); importable from here as before."""

from ..init_args import InitArgs, init_args_of, plain_value
from ..protocol import (
    MODELS,
    _accepted,
    _import_all_models,
    as_model,
    build,
    config_of,
    dumps_config,
    input_names,
    instantiate,
    register_model,
    resolve,
    resolve_config,
    spec_of,
    to_jsonable,
)

__all__ = [
    "MODELS",
    "InitArgs",
    "_accepted",
    "_import_all_models",
    "as_model",
    "build",
    "config_of",
    "dumps_config",
    "init_args_of",
    "input_names",
    "instantiate",
    "plain_value",
    "register_model",
    "resolve",
    "resolve_config",
    "spec_of",
    "to_jsonable",
]
