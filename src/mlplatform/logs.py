"""Logging setup shared by the platform's processes."""

import logging
import os


def configure_logging(level: str | None = None) -> None:
    level = level or os.getenv("MLPLATFORM_LOG_LEVEL") or "INFO"
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO; our own access lines are enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
