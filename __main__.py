"""liftoff: one customer's data platform per stack. See README.md."""

import pulumi

from components.config import read_stack_config
from components.platform import Platform

config = read_stack_config()
platform = Platform("liftoff", config)
for key, value in platform.outputs.items():
    pulumi.export(key, value)
