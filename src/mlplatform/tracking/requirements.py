"""Compare a model's ``requirements.txt`` with the platform's Python environment.

MLflow writes ``requirements.txt`` next to ``MLmodel`` with the packages the model was
logged with. The process runtime serves models in the platform's own environment, so
a package that is not installed at all makes serving fail; a different version is only
a warning, as MLflow itself treats it.
"""

import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlplatform.errors import InvalidInput

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"


@dataclass(frozen=True)
class RequirementsReport:
    missing: list[str] = field(default_factory=list)  # "name==1.0", not installed
    mismatched: list[str] = field(default_factory=list)  # "name==1.0 (installed 2.0)"


def read_requirements(model_dir: Path) -> list[str]:
    """The requirement lines of the model, without comments, options and includes."""
    path = model_dir / REQUIREMENTS_FILE
    if not path.is_file():
        return []
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    # "-r"/"-c" includes and pip options ("--index-url") name no package of their own.
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def check_requirements(model_dir: Path) -> RequirementsReport:
    report = RequirementsReport()
    for line in read_requirements(model_dir):
        requirement = _parse(line)
        if requirement is None or not _applies(requirement):
            continue
        installed = _installed_version(requirement.name)
        if installed is None:
            report.missing.append(_pip_spec(requirement))
        elif not requirement.specifier.contains(installed, prereleases=True):
            report.mismatched.append(
                f"{_pip_spec(requirement)} (installed {installed})"
            )
    return report


def ensure_satisfied(model_dir: Path) -> list[str]:
    """Raise ``InvalidInput`` if a package is missing; return the version mismatches."""
    report = check_requirements(model_dir)
    if report.missing:
        names = ", ".join(Requirement(spec).name for spec in report.missing)
        quoted = " ".join(f"'{spec}'" for spec in report.missing)
        raise InvalidInput(
            f"the model needs packages the platform's environment lacks: {names}; "
            f"install them in the platform's environment (pip install {quoted})"
        )
    for mismatch in report.mismatched:
        logger.warning("model %s wants %s", model_dir, mismatch)
    return report.mismatched


def _parse(line: str) -> Requirement | None:
    try:
        return Requirement(line)
    except InvalidRequirement:
        # URLs, local paths and editable installs carry no comparable version.
        logger.warning("skipping requirement line %r: not a package specifier", line)
        return None


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate()


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(canonicalize_name(name))
    except metadata.PackageNotFoundError:
        return None


def _pip_spec(requirement: Requirement) -> str:
    # Without the marker: it already held for this environment, and pip wants none.
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}{requirement.specifier}"
