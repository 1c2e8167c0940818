from pathlib import Path

import pytest

from mlplatform.errors import InvalidInput
from mlplatform.tracking.requirements import (
    check_requirements,
    ensure_satisfied,
    read_requirements,
)


def model_dir(tmp_path: Path, *lines: str) -> Path:
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "requirements.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_reads_only_package_lines(tmp_path: Path) -> None:
    folder = model_dir(
        tmp_path,
        "# comment",
        "-r other.txt",
        "-c constraints.txt",
        "--index-url https://example.org/simple",
        "",
        "numpy  # pinned by mlflow",
        "packaging>=20",
    )

    assert read_requirements(folder) == ["numpy", "packaging>=20"]


def test_no_requirements_file(tmp_path: Path) -> None:
    assert read_requirements(tmp_path) == []
    assert check_requirements(tmp_path).missing == []


def test_missing_and_mismatched(tmp_path: Path) -> None:
    folder = model_dir(
        tmp_path,
        "surely-not-installed-pkg==1.0",
        "Packaging>=1",
        "PyYAML<1",
        "other-missing-pkg; python_version < '3'",
        "git+https://example.org/repo.git",
    )

    report = check_requirements(folder)

    assert report.missing == ["surely-not-installed-pkg==1.0"]
    assert len(report.mismatched) == 1
    assert report.mismatched[0].startswith("PyYAML<1 (installed ")


def test_ensure_satisfied_names_missing_packages(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "surely-not-installed-pkg==1.0", "another-absent-pkg")

    with pytest.raises(InvalidInput) as info:
        ensure_satisfied(folder)

    assert str(info.value) == (
        "the model needs packages the platform's environment lacks: "
        "surely-not-installed-pkg, another-absent-pkg; install them in the platform's "
        "environment (pip install 'surely-not-installed-pkg==1.0' 'another-absent-pkg')"
    )


def test_ensure_satisfied_returns_mismatches_as_warnings(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "packaging<1", "httpx")

    assert ensure_satisfied(folder) == [
        f"packaging<1 (installed {__import__('packaging').__version__})"
    ]
