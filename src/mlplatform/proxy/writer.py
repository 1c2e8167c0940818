"""Writes Traefik configuration files so that Traefik never reads half a file."""

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

FILE_MODE = 0o600


def render_yaml(config: Mapping[str, Any]) -> bytes:
    """The exact bytes ``write_config`` writes for ``config``."""
    text = yaml.safe_dump(dict(config), sort_keys=True, default_flow_style=False)
    return text.encode()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, content: bytes) -> None:
    # The ".tmp" suffix matters: Traefik's file provider watches the whole directory
    # but only loads .yml/.yaml/.toml files, so it never sees the partial file.
    fd, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(content)
            temp.flush()
            os.fchmod(temp.fileno(), FILE_MODE)
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_config(path: Path, config: Mapping[str, Any]) -> bool:
    """Write ``config`` as YAML to ``path`` atomically, mode 0600.

    Returns False, touching nothing, when the file already holds the same bytes, so
    callers may rewrite on every reconciliation without making Traefik reload.
    """
    content = render_yaml(config)
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass

    _replace_atomically(path, content)
    logger.debug("wrote Traefik config %s (%s bytes)", path, len(content))
    return True
