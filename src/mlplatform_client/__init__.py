"""Compatibility module: code written for hosted ML platforms imports from here."""

from mlplatform.client import *  # noqa: F403
from mlplatform.client import __all__  # noqa: F401
