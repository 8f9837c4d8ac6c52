# tests: tests/core/test_config.py
"""Reading daemon.json from disk: the only I/O around aiwg.core.config."""

from __future__ import annotations

import os
from pathlib import Path

import stat

import attrs

from aiwg.core.config import Config, literal_secrets, parse_config_text
from aiwg.errors import ConfigError
from aiwg.paths import ProjectPaths


def config_path(paths: ProjectPaths, explicit: str | os.PathLike[str] | None) -> Path:
    """The file to read: --config (relative to the project), else .aiwg/daemon.json."""
    if explicit:
        chosen = Path(os.path.expanduser(os.fspath(explicit)))
        return chosen if chosen.is_absolute() else (paths.root / chosen)
    return paths.config_file


def load_config(paths: ProjectPaths, explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration. A missing default file means defaults;
    a missing file named with --config is an error."""
    path = config_path(paths, explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(str(path), ["file not found"]) from None
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc}"]) from None
    config = parse_config_text(text, str(path))
    problem = exposure(config)
    if problem is not None:
        config = attrs.evolve(config, warnings=(*config.warnings, problem))
    return config


def exposure(config: Config) -> str | None:
    """The warning for a config file that holds a secret written literally and that
    other users may read (as ssh says of a private key), or None."""
    secrets = literal_secrets(config.data)
    if not secrets:
        return None
    try:
        mode = stat.S_IMODE(os.stat(config.source).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
    return (f"{config.source} holds {', '.join(secrets)} written literally and is readable by {who} "
            f"(mode {mode:04o}): run `chmod 600 {config.source}`, or put the value in the daemon's "
            "environment and write ${VAR} instead")
