"""aiwg-daemon: a per-project daemon that supervises AI coding agents."""

__version__ = "0.1.0"
