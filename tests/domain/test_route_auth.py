import base64

import bcrypt
import pytest

from mlplatform.domain.route_auth import (
    RouteAuthCache,
    hash_password,
    parse_basic_header,
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("s3cret:with:colons")


def test_hash_is_salted_bcrypt_not_the_password(stored: str) -> None:
    assert stored.startswith("$2b$12$")
    assert "s3cret" not in stored
    assert hash_password("s3cret:with:colons") != stored  # a new salt each time


def test_right_credentials_pass_and_are_then_cached(stored: str) -> None:
    cache = RouteAuthCache(ttl=60)
    header = basic("user", "s3cret:with:colons")
    assert not cache.cached("d1", header)
    assert cache.check("d1", header, "user", stored)
    assert cache.cached("d1", header)
    assert not cache.cached("d2", header)  # entries are per deployment


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic !!!not-base64",
        basic("user", "wrong"),
        basic("other", "s3cret:with:colons"),
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ],
)
def test_wrong_or_malformed_credentials_fail_and_are_not_cached(
    stored: str, header: str | None
) -> None:
    cache = RouteAuthCache(ttl=60)
    assert not cache.check("d1", header, "user", stored)
    assert not cache.cached("d1", header)


def test_forget_and_expiry_drop_entries(stored: str) -> None:
    header = basic("user", "s3cret:with:colons")
    cache = RouteAuthCache(ttl=60)
    cache.check("d1", header, "user", stored)
    cache.forget("d1")
    assert not cache.cached("d1", header)

    expired = RouteAuthCache(ttl=-1)
    assert expired.check("d1", header, "user", stored)
    assert not expired.cached("d1", header)


def test_cache_keys_are_keyed_hmacs_not_headers(stored: str) -> None:
    header = basic("user", "s3cret:with:colons")
    cache = RouteAuthCache(ttl=60)
    cache.check("d1", header, "user", stored)
    (digest,) = cache._verified["d1"]
    assert header.encode() not in digest
    assert bcrypt.checkpw(b"s3cret:with:colons", stored.encode())


def test_parse_basic_header() -> None:
    assert parse_basic_header(basic("a", "b:c")) == ("a", "b:c")
    assert parse_basic_header("basic " + basic("a", "b")[6:]) == ("a", "b")
    assert parse_basic_header("Digest x") is None


def test_unicode_user_names_compare_without_error() -> None:
    stored = hash_password("pässwörd 🎉")
    cache = RouteAuthCache(ttl=60)
    assert cache.check("d", basic("üser", "pässwörd 🎉"), "üser", stored)
    assert not cache.check("d", basic("üser", "x"), "user", stored)
    assert not cache.check("d", basic("user", "pässwörd 🎉"), "üser", stored)
