"""Load an experiment from a ``.py`` file, a folder holding ``experiment.py``, or ``FILE:NAME``."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError, ShoalError
from shoal.spec import configuration as _config
from shoal.spec.experiment import Experiment


class ExperimentImportError(ShoalError):
    """The experiment file raised while it was imported."""


def resolve_target(target: str) -> tuple[Path, str | None]:
    """``path[:name]`` -> (file, attribute name or None)."""
    name = None
    path_text = target
    if ":" in target and not os.path.exists(target):
        path_text, _, name = target.rpartition(":")
    path = Path(path_text).expanduser()
    if path.is_dir():
        path = path / "experiment.py"
        if not path.is_file():
            raise ShoalError(
                f"{path_text!r} is a folder without experiment.py; give the experiment's .py "
                "file, or put the experiment in experiment.py"
            )
    elif not path.is_file():
        raise ShoalError(f"experiment {path_text!r} not found (give a .py file or a folder)")
    return path.resolve(), name or None


def load(target: str, **config: Any) -> Experiment:
    """Load an experiment file (or folder with experiment.py) with config values, as the CLI
    does: ``exp = shoal.load("examples/streamflow", sites=101)``."""
    return load_experiment(target, config)


def load_experiment(
    target: str, config: Mapping[str, Any] | None = None, *, strict_config: bool = True
) -> Experiment:
    """Import the experiment file with ``config`` installed and return its Experiment."""
    path, name = resolve_target(target)
    _config.set_overrides(config or {})
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    modname = path.stem if path.stem.isidentifier() else "shoal_experiment"
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:  # (what it prints goes to stderr: `plan --json`, `results --format csv` stay clean)
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except ShoalError:
        raise
    except SystemExit as exc:
        raise ExperimentImportError(f"{path} called sys.exit({exc.code}) while importing") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SyntaxError):  # (no frame of the file ran: show where it is)
            text = "".join(traceback.format_exception_only(type(exc), exc))
            raise ExperimentImportError(f"importing {path} failed:\n{text.rstrip()}") from None
        frames = traceback.extract_tb(exc.__traceback__)
        first = next((k for k, f in enumerate(frames) if f.filename == str(path)), 0)
        text = "".join(traceback.format_list(frames[first:][-8:]))
        raise ExperimentImportError(
            f"importing {path} failed: {type(exc).__name__}: {exc}\n{text.rstrip()}"
        ) from None
    found = {k: v for k, v in vars(module).items() if isinstance(v, Experiment)}
    if name is not None:
        if name not in found:
            raise ShoalError(
                f"{path} has no Experiment named '{name}' (found: {', '.join(found) or 'none'})"
            )
        exp = found[name]
    else:
        unique = list({id(v): v for v in found.values()}.values())
        if not unique:
            raise ShoalError(f"{path} defines no shoal.Experiment; create one: "
                             "exp = shoal.Experiment('name', grid=shoal.Grid(...))")
        if len(unique) > 1:
            raise ShoalError(
                f"{path} defines several experiments ({', '.join(found)}); choose one with "
                f"{path.name}:NAME"
            )
        exp = unique[0]
    if strict_config:
        unknown = sorted(set(config or {}) - set(_config.read_keys()))
        if unknown:
            known = ", ".join(sorted(_config.read_keys())) or "none"
            raise ConfigError(
                f"config key '{unknown[0]}' is not read by {path.name} (it reads: {known}); "
                "check the spelling"
            )
    exp.source = exp.source or path
    exp.config = dict(config or {})
    exp.target = f"{path}:{name}" if name else str(path)
    return exp
