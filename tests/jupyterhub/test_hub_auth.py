"""The hub token lookup of a linked MLflow, against a stand-in Hub API."""

import json
from collections.abc import Callable

import httpx
import pytest

from mlplatform.tracking.hub_auth import HubClient, HubUnavailable, HubUser, TokenCache

ACCESS = "access:services!service=mlflow"


def client(
    handler: Callable[[httpx.Request], httpx.Response], ttl: float = 30.0
) -> tuple[HubClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    return HubClient("http://hub/hub/api/", TokenCache(ttl), http), seen


def user_model(request: httpx.Request) -> httpx.Response:
    assert request.headers["Authorization"] == "token good"
    body = {
        "kind": "user",
        "name": "alice",
        "admin": True,
        "groups": ["team"],
        "scopes": [ACCESS, "read:users:name!user=alice"],
    }
    return httpx.Response(200, content=json.dumps(body))


def test_a_token_resolves_to_its_owner_with_admin_flag_groups_and_scopes() -> None:
    hub, seen = client(user_model)

    user, fresh = hub.lookup("good")

    assert fresh
    assert user == HubUser(
        "alice", True, ("team",), frozenset({ACCESS, "read:users:name!user=alice"})
    )
    assert str(seen[0].url) == "http://hub/hub/api/user"
    assert user.may_access("mlflow")
    assert not user.may_access("other")


def test_a_second_lookup_within_the_ttl_is_served_from_the_cache() -> None:
    hub, seen = client(user_model)

    hub.lookup("good")
    user, fresh = hub.lookup("good")

    assert user is not None and not fresh
    assert len(seen) == 1


def test_a_zero_ttl_asks_the_hub_every_time() -> None:
    hub, seen = client(user_model, ttl=0)

    hub.lookup("good")
    hub.lookup("good")

    assert len(seen) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_the_hub_refuses_has_no_owner(status: int) -> None:
    hub, _ = client(lambda request: httpx.Response(status))

    assert hub.lookup("bad") == (None, True)
    assert hub.lookup("bad") == (None, False)


def test_a_service_token_is_no_user() -> None:
    model = {"kind": "service", "name": "mlflow", "scopes": []}
    hub, _ = client(lambda request: httpx.Response(200, json=model))

    assert hub.lookup("service-token")[0] is None


def test_a_failing_hub_is_unavailable_and_nothing_is_cached() -> None:
    hub, seen = client(lambda request: httpx.Response(502))

    for _ in range(2):
        with pytest.raises(HubUnavailable, match="HTTP 502"):
            hub.lookup("good")
    assert len(seen) == 2


def test_the_cache_never_keeps_the_token_itself() -> None:
    cache = TokenCache(30)
    cache.put("secret-token", None)

    assert "secret-token" not in repr(cache.__dict__)
    assert cache.get("secret-token") == (True, None)
    assert cache.get("other") == (False, None)
