"""JupyterHub instances: a real hub whose users can be the users of a linked MLflow."""

from mlplatform.jupyterhub.instance import JupyterHubInstance, find_proxy_command

__all__ = ["JupyterHubInstance", "find_proxy_command"]
