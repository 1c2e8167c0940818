from datetime import timedelta

import pytest

from mlplatform.domain.names import check_name, parse_auth
from mlplatform.domain.tokens import parse_ttl
from mlplatform.errors import InvalidInput


@pytest.mark.parametrize("name", ["deploy_server_q2", "a", "0-x", "x" * 63])
def test_valid_names(name: str) -> None:
    assert check_name("deployment", name) == name


@pytest.mark.parametrize("name", ["", "Upper", "_x", "-x", "a/b", "a.b", "x" * 64, "é"])
def test_invalid_names_name_the_rule(name: str) -> None:
    with pytest.raises(InvalidInput, match="lowercase letters"):
        check_name("deployment", name)


def test_parse_auth_keeps_colons_in_password() -> None:
    credentials = parse_auth("user:Pass:word!")
    assert (credentials.username, credentials.password) == ("user", "Pass:word!")
    assert "Pass" not in repr(credentials)


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ("nocolon", "colon"),
        (":pw", "user name"),
        ("user:", "password"),
        ("a b:c", "whitespace"),
    ],
)
def test_malformed_auth(auth: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse_auth(auth)


def test_parse_ttl() -> None:
    assert parse_ttl("30d") == timedelta(days=30)
    assert parse_ttl("12h") == timedelta(hours=12)
    for bad in ("", "0d", "30", "d", "-1d", "1y"):
        with pytest.raises(InvalidInput, match="ttl"):
            parse_ttl(bad)


def test_route_password_longer_than_bcrypt_reads_is_refused() -> None:
    assert parse_auth("u:" + "p" * 72).password == "p" * 72
    with pytest.raises(InvalidInput, match="72 bytes"):
        parse_auth("u:" + "p" * 73)
    with pytest.raises(InvalidInput, match="72 bytes"):
        parse_auth("u:" + "é" * 37)  # 74 bytes in UTF-8


def test_huge_ttl_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at most"):
        parse_ttl("99999999d")
    with pytest.raises(InvalidInput, match="at most"):
        parse_ttl("3651d")
