"""Print the policy config (JSON for `--policy-pack-config`) derived from a stack file.

python policy/config_for_stack.py Pulumi.acme-prod.yaml > policy-config.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from liftoff_policy.stack_config import policy_config_for_file


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} Pulumi.<stack>.yaml", file=sys.stderr)
        return 2
    config = policy_config_for_file(Path(argv[1]).read_text())
    print(json.dumps(config, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
