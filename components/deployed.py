"""What this stack's previous update deployed, read back from its own outputs, and the volume
size changes that needs.

A Kubernetes StatefulSet's `volumeClaimTemplates` cannot change: the API server refuses the
update and pulumi-kubernetes replaces the StatefulSet instead (every pod down at once), while
the retained claims keep their old size. So a changed `storageGb` is refused until the
operator has grown the claims and removed the StatefulSet by the documented procedure, and says
so (`storageResizedFrom`: the size the stack had). The sizes are exported as a stack output
and read back on the next update through a StackReference to the stack itself, deterministic
in preview; a stack that never exported them (new, or last updated by an older release) is
not checked.
"""

from __future__ import annotations

from typing import Any

import pulumi

# The stack output holding each volume size the stack deployed, by config namespace:
# {"postgres": 20, "stream": 10} (Kubernetes only: RDS resizes its storage in place).
STORAGE_OUTPUT = "storageGb"
RESIZE_PROCEDURE = "README.md, 'Resizing a volume (Kubernetes)'"


def own_stack(name: str, parent: pulumi.Resource) -> pulumi.StackReference:
    """A reference to this very stack (`<name>-deployed`): its outputs are what the previous
    update deployed. One per component, whatever it reads back."""
    stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    return pulumi.StackReference(
        f"{name}-deployed", stack_name=stack, opts=pulumi.ResourceOptions(parent=parent)
    )


def deployed_storage_gb(reference: pulumi.StackReference, key: str) -> pulumi.Output[int | None]:
    """The size of `liftoff:<key>.storageGb` the previous update deployed, or None."""

    def size(sizes: Any) -> int | None:
        if isinstance(sizes, dict) and sizes.get(key) is not None:
            return int(sizes[key])
        return None

    return reference.get_output(STORAGE_OUTPUT).apply(size)


class StorageSizeChange(ValueError):
    """`liftoff:<key>.storageGb` differs from the size of the stack's existing volumes."""


def check_storage_size(
    key: str, deployed: int | None, configured: int, resized_from: int | None
) -> None:
    """Refuse a size other than the deployed one, unless the operator states the volumes were
    resized from exactly the deployed size by the procedure (`storageResizedFrom`)."""
    if deployed is None or deployed == configured:
        return
    if resized_from is not None and resized_from == deployed:
        return
    raise StorageSizeChange(
        f"liftoff:{key}.storageGb: got {configured}; allowed: {deployed}, the size of this "
        "stack's volumes. The size sits in the StatefulSet's volumeClaimTemplates, which "
        "Kubernetes cannot change: this update would replace the StatefulSet (all its pods "
        "down at once) and leave the volumes at their old size. To resize, follow "
        f"{RESIZE_PROCEDURE}: grow each claim in place (a StorageClass with "
        "allowVolumeExpansion), delete the StatefulSet with --cascade=orphan, then set "
        f"storageGb: {configured} and storageResizedFrom: {deployed}."
    )
