"""Wraps the rule functions in `pulumi_policy` policies (no PolicyPack here: constructing one
starts the analyzer server and blocks, so only `policy/__main__.py` does it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (  # the SDK's own sentinels and proxy types
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    _DictProxy,
    _ListProxy,
)

from .model import UNKNOWN, Resource
from .registry import RULES, Rule

PACK_NAME = "liftoff"
_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)


def plain(value: Any) -> Any:
    """The engine's props as plain dicts/lists, unknown values replaced by `UNKNOWN`.

    `pulumi_policy` hands props behind proxies that raise on unknown values; a stack rule
    would then abort on the first unknown anywhere in the stack. Rules skip unknowns instead.
    """
    if isinstance(value, _DictProxy | _ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, str) and value in _UNKNOWN_SENTINELS:
        return UNKNOWN
    return value


def _resource(
    type_: str, name: str, urn: str, props: Any, opts: Any, provider: Any, deps: tuple[str, ...]
) -> Resource:
    return Resource(
        type=type_,
        name=name,
        urn=urn,
        props=plain(props),
        protect=bool(getattr(opts, "protect", False)),
        provider=plain(provider.props) if provider is not None else None,
        dependencies=deps,
    )


def _knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in config.items() if k != "enforcementLevel"}


def _validate_resource(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        assert rule.check is not None
        resource = _resource(
            args.resource_type, args.name, args.urn, args.props, args.opts, args.provider, ()
        )
        for message in rule.check(resource, _knobs(args.get_config())):
            report_violation(message, None)

    return validate


def _validate_stack(rule: Rule):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        assert rule.check_stack is not None
        resources = []
        for r in args.resources:
            deps = {d.urn for d in r.dependencies}
            for prop_deps in r.property_dependencies.values():
                deps.update(d.urn for d in prop_deps)
            resources.append(
                _resource(
                    r.resource_type, r.name, r.urn, r.props, r.opts, r.provider, tuple(sorted(deps))
                )
            )
        knobs = _knobs(args.get_config())
        if rule.check is not None:
            for resource in resources:
                for message in rule.check(resource, knobs):
                    report_violation(message, resource.urn)
        for found in rule.check_stack(resources, knobs):
            report_violation(found.message, found.urn)

    return validate


def _schema(rule: Rule) -> PolicyConfigSchema | None:
    return PolicyConfigSchema(properties=dict(rule.config)) if rule.config else None


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    """One policy per rule, named after it. A rule with a cross-resource check becomes a
    stack policy that also runs its per-resource check on every resource."""
    policies: list[ResourceValidationPolicy | StackValidationPolicy] = []
    for rule in RULES:
        level = EnforcementLevel(rule.enforcement)
        common = {
            "name": rule.name,
            "description": rule.description,
            "enforcement_level": level,
            "config_schema": _schema(rule),
        }
        if rule.check_stack is not None:
            policies.append(StackValidationPolicy(validate=_validate_stack(rule), **common))
        else:
            policies.append(ResourceValidationPolicy(validate=_validate_resource(rule), **common))
    return policies
