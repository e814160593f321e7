"""Strict config plumbing: JSON hparams, typed overrides, resolved-config files."""

import dataclasses
import difflib
import json
import math
import os
import types
import typing

from util import backend, io_utils


class ConfigError(ValueError):
    """A user-facing configuration problem (unknown key, wrong type, bad JSON)."""


def load_hparams(hparams):
    """Parses `--hparams`: a JSON object string, a path to a .json file, or None.

    Returns:
        A dict of overrides (empty for None / "").
    """
    if hparams is None or not str(hparams).strip():
        return {}
    text, source = hparams, "--hparams"
    if hparams.strip().endswith(".json") and not hparams.strip().startswith("{"):
        path = hparams.strip()
        if not os.path.exists(path):
            raise ConfigError(f"--hparams file {path!r} does not exist; pass a JSON object "
                                                "string or the path of an existing .json file.")
        with open(path, encoding="utf-8") as f:
            text, source = f.read(), path
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
                f"malformed JSON in {source} at line {e.lineno}, column {e.colno} "
                f"(char {e.pos}): {e.msg}. Expected an object such as "
                "'{\"debug\": true, \"num_train_steps\": 100}'.") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{source} must hold a JSON object (a dict of hparams), "
                                            f"got {type(parsed).__name__}.")
    return parsed


def _type_name(tp):
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value, tp):
    """True if a JSON-decoded `value` is acceptable for annotation `tp`."""
    if tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # JSON writes 1e6 as a float but 100 as an int: accept both.
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (
                not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _coerce(value, tp):
    """Normalises accepted JSON values (ints for floats, lists for tuples)."""
    if tp is float and isinstance(value, int):
        return float(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is not None and len(args) == 1:
            return _coerce(value, args[0])
    if (origin is tuple or tp is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def check_overrides(cls, overrides, allowed_extra=()):
    """Validates user overrides against the fields of dataclass `cls`.

    Raises:
        ConfigError naming the first unknown key (with the closest valid name) or
        the first key whose value has the wrong type (with the expected type).
    Returns:
        The overrides with ints widened to floats where the field is a float.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init] + list(allowed_extra)
    checked = {}
    for key, value in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown hparam {key!r} for {cls.__name__}.{hint} "
                                                f"See {cls.__module__}.py for the supported hparams.")
        if isinstance(value, float) and not math.isfinite(value):
            # JSON's NaN / Infinity: never a meaningful hparam, and they break derivations.
            raise ConfigError(f"hparam {key!r} of {cls.__name__} must be a finite number, "
                              f"got {value}.")
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(
                    f"hparam {key!r} of {cls.__name__} expects {_type_name(hints[key])}, "
                    f"got {type(value).__name__} {value!r}.")
        checked[key] = _coerce(value, hints.get(key, typing.Any))
    return checked


def user_overrides(cls, hparams, none_is_a_value=()):
    """The checked overrides of `--hparams` (a dict, JSON string or .json path) for a
    run config class; data_dir and model_name come from their own flags only.

    An explicit null for an Optional field is its None sentinel, "derive it", so it is
    dropped and the derived default applies, as when the key is absent; fields in
    `none_is_a_value` (e.g. init_checkpoint: null = random init) keep it.
    """
    user = hparams if isinstance(hparams, dict) else load_hparams(hparams)
    user = check_overrides(cls, user)
    user = {k: v for k, v in user.items() if v is not None or k in none_is_a_value}
    for key in ("data_dir", "model_name"):
        if key in user:
            raise ConfigError(f"{key} is set by --{key.replace('_', '-')}, not by --hparams.")
    return user


def merge_defaults(resolved, user, defaults):
    """Applies `defaults` (e.g. debug or size defaults) to keys the user did not set."""
    for key, value in defaults.items():
        if key not in user:
            resolved[key] = value


def config_to_dict(config):
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def save_config(config, path):
    """Writes the resolved config as sorted, indented JSON, atomically."""
    io_utils.write_json(dict(sorted(config_to_dict(config).items())), path, indent=2)


def load_saved_config(path):
    """Reads a config JSON written by `save_config` (None if it does not exist)."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def format_config(config):
    """The original's config dump: one `key value` line per field, sorted, then the
    backend settings this process runs with (util/backend.py)."""
    return "\n".join([f"{k} {v}" for k, v in sorted(config_to_dict(config).items())]
                     + backend.describe())
