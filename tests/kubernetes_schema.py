"""Strict validation of declared Kubernetes objects against the real Kubernetes schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

# The oldest Kubernetes minor the platform supports; strict mode rejects unknown fields.
KUBERNETES_VERSION = "1.30.0"


def schema_errors(objects: list[dict[str, Any]]) -> list[str]:
    """One line per invalid object: kind/namespace/name, the JSON path and the reason."""
    errors = []
    for obj in objects:
        metadata = obj.get("metadata") or {}
        where = f"{obj.get('kind')}/{metadata.get('namespace', '-')}/{metadata.get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{where}: at {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{where}: {error.message}")
    return errors
