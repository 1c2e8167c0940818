"""MLflow deployments plugin: ``mlflow.deployments.get_deploy_client("mlplatform")``.

Target URIs: ``mlplatform`` (URL and credentials from the environment, as for
``MLPlatform``) or ``mlplatform:/<deploy server>`` to fix the default deploy server.
An MLflow "endpoint" is a deploy server; ``config`` may carry ``auth`` ("user:pass")
for a deployment's URL, and ``runtime`` for a new deploy server.
"""

from typing import Any

from mlflow.deployments import BaseDeploymentClient

from mlplatform.client._client import MLPlatform


def _server_from_target(target_uri: str) -> str | None:
    _, _, rest = target_uri.partition(":")
    return rest.strip("/") or None


class MLPlatformDeploymentClient(BaseDeploymentClient):
    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)  # type: ignore[no-untyped-call]
        self.default_server = _server_from_target(target_uri)
        self.client = MLPlatform()

    def _server(self, endpoint: str | None) -> str:
        server = endpoint or self.default_server
        if not server:
            raise ValueError(
                "no deploy server: pass endpoint=<name> or use the target "
                "'mlplatform:/<deploy server>'"
            )
        return server

    def create_deployment(
        self,
        name: str,
        model_uri: str,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        if flavor not in (None, "python_function"):
            raise ValueError(f"flavor {flavor!r} is not supported; use python_function")
        auth = (config or {}).get("auth")
        return self.client.create_deployment_standalone(
            self._server(endpoint), name, model_uri, auth=auth
        )

    def update_deployment(
        self,
        name: str,
        model_uri: str | None = None,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError(
            "updating a deployment in place is not supported yet; delete and create it"
        )

    def delete_deployment(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.client.delete_deployment(self._server(endpoint), name)

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self.client.list_deployments(self._server(endpoint))

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        return self.client.get_deployment(self._server(endpoint), name)

    def predict(
        self,
        deployment_name: str | None = None,
        inputs: Any = None,
        endpoint: str | None = None,
    ) -> Any:
        if deployment_name is None:
            raise ValueError("deployment_name is required")
        return self.client.predict_model(
            inputs, self._server(endpoint), deployment_name
        )

    def create_endpoint(
        self, name: str, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.client.create_endpoint_standalone(
            name, runtime=(config or {}).get("runtime")
        )

    def delete_endpoint(self, endpoint: str) -> None:
        self.client.delete_endpoint(endpoint)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self.client.list_endpoints()

    def get_endpoint(self, endpoint: str) -> dict[str, Any]:
        return self.client.get_endpoint(endpoint)


def run_local(
    target: str,
    name: str,
    model_uri: str,
    flavor: str | None = None,
    config: dict[str, Any] | None = None,
) -> None:
    raise NotImplementedError(
        "run_local is not supported: use `mlflow models serve -m <model uri>`"
    )


def target_help() -> str:
    return __doc__ or ""
