# tests: tests/core/test_config.py
"""Reading daemon.json from disk: the only I/O around aiwg.core.config."""

from __future__ import annotations

import os
from pathlib import Path

from aiwg.core.config import Config, parse_config_text
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
    return parse_config_text(text, str(path))
