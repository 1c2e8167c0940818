"""The tracking side: run an MLflow tracking server and fetch models from it.

``TrackingServer`` runs one MLflow instance; ``fetch_model`` downloads a model with
the caller's own MLflow credentials; ``check_requirements`` compares a model's
``requirements.txt`` with the platform's environment.
"""
