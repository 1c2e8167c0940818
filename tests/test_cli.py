"""CLI errors: `Error: ...`, a non-zero exit, no traceback, before anything starts."""

import fcntl
from pathlib import Path

import pytest

from platform_support import run_cli


def assert_clean_error(result: object, text: str) -> None:
    assert result.returncode == 1  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert stderr.startswith("Error:"), stderr
    assert text in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("port", ["0", "99999", "-1"])
def test_up_refuses_ports_outside_the_range(tmp_path: Path, port: str) -> None:
    result = run_cli(tmp_path, "up", "--detach", "--port", port, check=False)
    assert_clean_error(result, "port")
    assert not (tmp_path / "credentials.json").exists()


def test_up_refuses_a_home_another_up_holds(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with (tmp_path / "run" / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli(tmp_path, "up", "--detach", "--port", "18999", check=False)
    assert_clean_error(result, "another `mlplatform up`")


def test_up_refuses_a_weak_admin_password(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "up", "--detach", "--admin-password", "short", check=False
    )
    assert_clean_error(result, "too short")


def test_predict_with_a_missing_body_file(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "deployment", "predict", "s", "d", "--data", "@/nonexistent",
        check=False,
    )  # fmt: skip
    assert_clean_error(result, "cannot read /nonexistent")


def test_commands_without_a_platform_say_what_to_do(tmp_path: Path) -> None:
    assert_clean_error(run_cli(tmp_path, "env", check=False), "mlplatform up")
    assert_clean_error(run_cli(tmp_path, "status", check=False), "not running")
    assert_clean_error(
        run_cli(tmp_path, "endpoint", "list", check=False), "no credentials"
    )
