"""The liftoff policy pack: `pulumi preview --policy-pack policy` runs this file.

Constructing the PolicyPack starts the analyzer server and blocks, so nothing else may
import this module; the rules live in `liftoff_policy` and are tested on their own.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from liftoff_policy.pack import PACK_NAME, build_policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="liftoff platform guarantees: encryption, private data stores, least-privilege "
    "IAM, deletion protection (AWS); Pod Security restricted, pinned images through the "
    "registry override, retained volumes, default-deny networking, no plain secrets (Kubernetes).",
)
