"""What the settings tests share: a stack's configuration read as `load_config` reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.config import PlatformConfig, load_config
from components.validation import ConfigError

AWS = {"liftoff:target": "aws", "aws:region": "eu-west-1"}
"""The smallest valid AWS stack."""


def load(values: dict[str, Any], stack: str = "dev") -> PlatformConfig:
    """`values` (objects and lists as Python values) read as the program reads them."""
    raw = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in values.items()}
    return load_config(raw, project="liftoff", stack=stack)


def problems(values: dict[str, Any], stack: str = "dev") -> list[str]:
    """Every problem `load_config` reports for `values`, in order."""
    with pytest.raises(ConfigError) as caught:
        load(values, stack)
    return [str(p) for p in caught.value.problems]
