"""Training configs: Hydra composition of ``conf/`` (and a recipe's ``conf=FILE``) with
command-line overrides, and the checks that turn a configuration mistake into one line naming
the key (a missing ``???`` value, a value of the wrong type, an unknown key or group option,
an override Hydra cannot parse).

The library raises :class:`ConfigError` (a ``ValueError``); the CLI prints its message.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
"""The package's Hydra config dir (``conf/``; ``conf/lm`` for neural LMs)."""

__all__ = ["CONF_DIR", "ConfigError", "check_missing_values", "compose_train_config",
           "config_error_message", "missing_value_message"]


class ConfigError(ValueError):
    """A mistake in a composed config or its overrides, reported by the CLI in one line: a
    missing mandatory (``???``) value, a value of the wrong type, an unknown key or group
    option, an override Hydra cannot parse. The message names the key."""


# What the mandatory (???) values of conf/ and conf/lm/ expect, by (config, key).
_MISSING_HELP = {
    ("train", "exp_dir"): "the experiment directory to write (set exp_dir=PATH)",
    ("train", "data.train"): "the training feature data dir, asrkit features output "
                             "(set data.train=PATH)",
    ("train", "data.tokenizer"): "path to the sentencepiece model, asrkit tokenizer output "
                                 "(set data.tokenizer=PATH)",
    ("lm", "exp_dir"): "the LM experiment directory to write (set exp_dir=PATH)",
    ("lm", "data.train"): "the training text, Kaldi text or one sentence a line "
                          "(set data.train=PATH)",
    ("lm", "data.tokenizer"): "path to the acoustic model's sentencepiece model "
                              "(set data.tokenizer=PATH)",
}


def missing_value_message(key: str, config: str = "train") -> str:
    """One line for a missing mandatory config value: the key and what it expects."""
    what = _MISSING_HELP.get((config, key), f"a value (set {key}=VALUE)")
    return f"missing config value '{key}': {what}"


def check_missing_values(cfg, config: str = "train", ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`ConfigError` naming every mandatory (``???``) value ``cfg`` still lacks.

    Args:
        cfg: a composed ``DictConfig``.
        config: ``"train"`` (``conf/``) or ``"lm"`` (``conf/lm``), for the descriptions.
        ignore: keys the chosen model does not use (``data.tokenizer`` for ``hmm_gmm``).
    """
    from omegaconf import OmegaConf

    keys = sorted(k for k in OmegaConf.missing_keys(cfg) if k not in ignore)
    if len(keys) == 1:
        raise ConfigError(missing_value_message(keys[0], config))
    if keys:
        raise ConfigError("missing config values: " + "; ".join(
            missing_value_message(k, config).split(" ", 3)[3] for k in keys))


def _kind(value) -> str | None:
    """The type a default value asks an override for; None accepts anything."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (ListConfig, list)):
        return "a list ([a,b,...])"
    if isinstance(value, (DictConfig, dict)):
        return "a mapping ({key: value, ...})"
    return None


def _fits(value, kind: str) -> bool:
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return True  # null, or an interpolation resolved later
    if kind.startswith("a boolean"):
        return isinstance(value, bool)
    if kind == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "a number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith("a list"):
        return isinstance(value, list)
    return isinstance(value, dict)


def _override_types(base, parsed) -> None:
    """Raise :class:`ConfigError` for a ``KEY=VALUE`` override whose value has another type
    than ``KEY``'s default in ``base`` (the config composed without the value overrides)."""
    from omegaconf import OmegaConf

    for o in parsed:
        if o.is_delete() or o.is_add() or o.is_sweep_override():
            continue
        key = o.key_or_group
        default = OmegaConf.select(base, key, throw_on_resolution_failure=False)
        kind = _kind(default)
        if kind is None or _fits(o.value(), kind):
            continue
        given = o.input_line.split("=", 1)[1] if "=" in o.input_line else o.input_line
        shown = str(default).lower() if isinstance(default, bool) else str(
            OmegaConf.to_container(default) if not isinstance(default, (int, float)) else default)
        raise ConfigError(f"wrong type for config value '{key}': got {given!r}, expected {kind} "
                          f"(default: {shown})")


def _unknown_key_message(e: Exception, parsed, base) -> str | None:
    """Hydra's "Could not override 'KEY'" as one line, with a close match when there is one."""
    import difflib
    import re

    from omegaconf import DictConfig, OmegaConf

    m = re.search(r"Could not override '([^']+)'", str(e))
    if not m:
        return None
    key = m.group(1)
    line = next((o.input_line for o in parsed if o.key_or_group == key), key)
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(base, parent, throw_on_resolution_failure=False) if parent else base
    hint = ""
    if isinstance(node, DictConfig):
        close = difflib.get_close_matches(leaf, [str(k) for k in node], n=1)
        if close:
            hint = f"; did you mean '{parent + '.' if parent else ''}{close[0]}'?"
    return (f"unknown config key '{key}' (in {line}){hint} (a new key needs a '+': "
            f"+{line.lstrip('+')})")


def _hydra_message(e: Exception) -> str:
    """A Hydra/OmegaConf error message as one line (no links, no object dumps)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, choice = e.missing_cfg_file.rpartition("/")
        return (f"unknown option '{choice}' for config group '{group}'; available: "
                f"{', '.join(e.options)}")
    lines = [x.strip() for x in str(e).splitlines() if x.strip()
             and not x.strip().startswith(("See https://", "full_key:", "object_type=",
                                           "reference_type=", "Config search path",
                                           "provider="))]
    if isinstance(e, OverrideParseException):
        return f"cannot parse override {e.override!r}: {'; '.join(lines[1:] or lines)} " \
               "(expected KEY=VALUE)"
    return "; ".join(lines)


def compose_train_config(overrides: list[str], conf_dir: Path = CONF_DIR):
    """Compose the training config from ``conf/`` (+ an optional ``conf=FILE``) and overrides.

    Each ``KEY=VALUE`` override must keep the type of ``KEY``'s default (an integer stays an
    integer, a list a list; ``null`` and interpolations are always accepted).

    Args:
        overrides: Hydra override strings; one may be ``conf=PATH`` naming a recipe YAML.
        conf_dir: the package config dir (``conf/``; ``conf/lm`` for neural LMs).

    Returns:
        The composed ``DictConfig`` (mandatory ``???`` values may still be missing; see
        :func:`check_missing_values`).

    Raises:
        FileNotFoundError: when ``conf=PATH`` does not exist.
        ConfigError: an unknown key or group option, an override of the wrong type or one
            that cannot be parsed; one line naming the key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    conf = [o for o in overrides if o.startswith("conf=")]
    rest = [o for o in overrides if not o.startswith("conf=")]
    search = []
    if conf:
        path = Path(conf[-1].split("=", 1)[1]).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"recipe config {path} not found")
        config_dir, name = str(path.parent), path.stem
        search = [f"hydra.searchpath=[file://{conf_dir}]"]
    else:
        config_dir, name = str(conf_dir), "config"
    try:
        parsed = OverridesParser.create().parse_overrides(rest)
    except HydraException as e:
        raise ConfigError(_hydra_message(e)) from None
    dirs = (Path(config_dir), Path(conf_dir))
    groups = [o.input_line for o in parsed
              if any((d / o.key_or_group).is_dir() for d in dirs)]
    values = [o for o in parsed if not any((d / o.key_or_group).is_dir() for d in dirs)]
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        try:
            base = compose(name, overrides=search + groups)
        except HydraException as e:
            raise ConfigError(_hydra_message(e)) from None
        try:
            cfg = compose(name, overrides=search + rest)
        except HydraException as e:
            raise ConfigError(_unknown_key_message(e, values, base) or _hydra_message(e)) \
                from None
    _override_types(base, values)
    return cfg



def config_error_message(e: Exception, config: str = "train") -> str | None:
    """One line for an OmegaConf/Hydra error raised while a command ran (e.g. a ``???``
    value the library read); None for other errors. ``config``: ``"train"`` or ``"lm"``."""
    module = type(e).__module__.split(".")[0]
    if module not in ("omegaconf", "hydra"):
        return None
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    key = getattr(e, "full_key", None)
    if isinstance(e, MissingMandatoryValue) and key:
        return missing_value_message(key, config)
    if isinstance(e, OmegaConfBaseException):
        msg = getattr(e, "msg", None) or str(e).splitlines()[0]
        return f"config value '{key}': {msg}" if key else msg
    return _hydra_message(e)
