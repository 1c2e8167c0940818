"""The platform's domain: deploy servers, deployments, tokens. No HTTP here."""
