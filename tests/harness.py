"""Run the real liftoff program under Pulumi's mock runtime and capture what it declares.

`run_program("stacks/aws.yaml")` loads that stack file's config into the mock runtime (project
`liftoff`, stack named after the file), executes `__main__.py` exactly as `pulumi up` would, and
returns every registered resource (type, name, inputs, parent) plus the resolved stack outputs.
Encrypted (`secure:`) config values are replaced by placeholders and marked secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "liftoff"
ACCOUNT_ID = "123456789012"
STACK_FILES = [ROOT / "Pulumi.dev.yaml", *sorted((ROOT / "stacks").glob("*.yaml"))]


@dataclass
class DeclaredResource:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent: str | None
    custom: bool
    dependencies: list[str] = field(default_factory=list)
    secret_paths: list[str] = field(default_factory=list)
    """Input paths whose values were Pulumi secrets (stored encrypted in state)."""
    retain_on_delete: bool = False
    protect: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    """Input properties whose changes the engine ignores (`ignore_changes`), as sent."""


@dataclass
class ProgramRun:
    stack: str
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    config: dict[str, str]

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> DeclaredResource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise AssertionError(f"expected one {type_} named {name!r}, found {names}")
        return found[0]

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Every plain Kubernetes object declared (not providers, Helm charts or releases)."""
        objects = []
        for resource in self.resources:
            if not resource.type.startswith("kubernetes:") or not resource.custom:
                continue
            if resource.type.startswith(("pulumi:providers", "kubernetes:helm.sh")):
                continue
            objects.append({k: v for k, v in resource.inputs.items() if k != "__defaults"})
        return objects

    def declared_inputs(self) -> str:
        """A canonical dump of everything declared, to compare two runs.

        Registration order is left out: the engine orders by dependencies, not by arrival.
        """
        return json.dumps(
            [
                {"type": r.type, "name": r.name, "parent": r.parent, "inputs": r.inputs}
                for r in sorted(self.resources, key=lambda r: r.urn)
            ],
            sort_keys=True,
            default=str,
        )


def stack_name_of(path: Path) -> str:
    name = path.name
    if name.startswith("Pulumi.") and name.endswith(".yaml"):
        return name[len("Pulumi.") : -len(".yaml")]
    return path.stem


def load_stack_config(path: Path) -> tuple[dict[str, str], set[str]]:
    """Convert a stack file's `config:` into the strings Pulumi hands to programs."""
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, value in (document.get("config") or {}).items():
        value, is_secret = _decrypt_placeholders(key, value)
        if is_secret:
            secret_keys.add(key)
        config[key] = _to_config_string(value)
    return config, secret_keys


def _decrypt_placeholders(key: str, value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict) and set(value) == {"secure"}:
        digest = hashlib.sha256(f"{key}:{value['secure']}".encode()).hexdigest()[:12]
        return f"mock-secret-{digest}", True
    if isinstance(value, dict):
        items = {k: _decrypt_placeholders(f"{key}.{k}", v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(s for _, s in items.values())
    if isinstance(value, list):
        items = [_decrypt_placeholders(f"{key}[{i}]", v) for i, v in enumerate(value)]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def _to_config_string(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LiftoffMocks(pulumi.runtime.Mocks):
    """Plays the cloud providers: echoes inputs back and adds the outputs providers compute."""

    def __init__(
        self, region: str = "eu-west-1", previous_outputs: Mapping[str, Any] | None = None
    ):
        self.region = region
        # What the stack exported on its previous update (a new stack: nothing).
        self.previous_outputs = dict(previous_outputs or {})

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == "pulumi:pulumi:StackReference":
            # A read, not a registration: the referenced stack's outputs.
            state = {**args.inputs, "outputs": self.previous_outputs, "secretOutputNames": []}
            return args.resource_id, state
        if not args.custom:
            return None, {}
        state = dict(args.inputs)
        resource_id = f"{args.name}-id"
        token = args.typ
        if token.startswith("aws:"):
            service = token.split(":")[1].split("/")[0]
            state.setdefault("name", args.name)
            if token == "aws:s3/bucket:Bucket" and "bucketPrefix" in state:
                # Like the provider: the prefix plus a unique suffix (here: deterministic).
                suffix = hashlib.sha256(args.name.encode()).hexdigest()[:26]
                state.setdefault("bucket", f"{state['bucketPrefix']}{suffix}")
            state.setdefault(
                "arn",
                self._arn(token, state)
                or f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:{args.name}",
            )
        if token == "aws:rds/instance:Instance":
            address = f"{state.get('identifier', args.name)}.c0ffee.{self.region}.rds.amazonaws.com"
            state.update(address=address, endpoint=f"{address}:5432", port=5432)
        elif token == "aws:apigatewayv2/api:Api":
            api_id = hashlib.sha256(args.name.encode()).hexdigest()[:10]
            resource_id = api_id
            state["apiEndpoint"] = f"https://{api_id}.execute-api.{self.region}.amazonaws.com"
            state["executionArn"] = f"arn:aws:execute-api:{self.region}:{ACCOUNT_ID}:{api_id}"
        elif token == "aws:lambda/function:Function":
            state["invokeArn"] = f"arn:aws:apigateway:{self.region}:lambda:path/{args.name}"
        elif token == "aws:kms/key:Key":
            state["keyId"] = f"{args.name}-key-id"
        elif token == "aws:ec2/vpc:Vpc":
            resource_id = "vpc-0123456789abcdef0"
        elif token == "aws:ec2/subnet:Subnet":
            resource_id = "subnet-" + hashlib.sha256(args.name.encode()).hexdigest()[:17]
        elif token == "random:index/randomPassword:RandomPassword":
            state["result"] = mock_password(args.name)
        elif token == "random:index/randomBytes:RandomBytes":
            raw = hashlib.sha256(args.name.encode()).digest()[: int(state.get("length", 32))]
            state.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
        elif token == "random:index/randomId:RandomId":
            # Like the provider: new bytes whenever the keepers change.
            seed = json.dumps([args.name, state.get("keepers")], sort_keys=True, default=str)
            raw = hashlib.sha256(seed.encode()).digest()[: int(state.get("byteLength", 8))]
            state.update(hex=raw.hex(), b64Url=base64.urlsafe_b64encode(raw).decode().rstrip("="))
        elif token == "aws:mwaa/environment:Environment":
            state["webserverUrl"] = f"{args.name}.airflow.{self.region}.on.aws"
        elif token.startswith("kubernetes:") and isinstance(state.get("metadata"), dict):
            state["metadata"] = {"name": args.name, **state["metadata"]}
        return resource_id, state

    def _arn(self, token: str, state: dict) -> str | None:
        """The ARN shape AWS gives the resource types IAM policies name, so that policies can
        be checked against each action's resource types (tests/components/test_aws_iam.py)."""
        where = f"{self.region}:{ACCOUNT_ID}"
        name = state["name"]
        if token == "aws:s3/bucket:Bucket":
            return f"arn:aws:s3:::{state.get('bucket') or state.get('bucketPrefix') or name}"
        if token == "aws:kms/key:Key":
            digest = hashlib.sha256(name.encode()).hexdigest()
            key_id = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
            return f"arn:aws:kms:{where}:key/{key_id}"
        if token == "aws:lambda/function:Function":
            return f"arn:aws:lambda:{where}:function:{name}"
        if token == "aws:kinesis/stream:Stream":
            return f"arn:aws:kinesis:{where}:stream/{name}"
        if token == "aws:kinesis/streamConsumer:StreamConsumer":
            return f"{state['streamArn']}/consumer/{name}:1700000000"
        if token == "aws:sqs/queue:Queue":
            return f"arn:aws:sqs:{where}:{name}"
        if token == "aws:secretsmanager/secret:Secret":
            return f"arn:aws:secretsmanager:{where}:secret:{name}-AbCdEf"
        if token == "aws:cloudwatch/logGroup:LogGroup":
            return f"arn:aws:logs:{where}:log-group:{name}"
        if token == "aws:iam/role:Role":
            return f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
        return None

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{suffix}" for suffix in "abc"]
            return {"names": names, "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)]}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:root"}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region}
        return {}


def mock_password(resource_name: str) -> str:
    return "mockpw" + hashlib.sha256(resource_name.encode()).hexdigest()[:24]


class RecordingMonitor(mocks.MockMonitor):
    """A MockMonitor that also remembers each registration's parent and dependencies."""

    def __init__(self, mocks_: pulumi.runtime.Mocks):
        super().__init__(mocks_)
        self.declared: list[DeclaredResource] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources.get(response.urn)
            inputs = registration.state if registration and request.custom else {}
            if not request.custom:
                inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            secret_paths: list[str] = []
            plain_inputs = _plain(inputs, secret_paths)
            self.declared.append(
                DeclaredResource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=plain_inputs,
                    secret_paths=secret_paths,
                    parent=request.parent or None,
                    custom=request.custom,
                    dependencies=list(request.dependencies),
                    retain_on_delete=bool(request.retainOnDelete),
                    protect=bool(request.protect),
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response


_SECRET_SIG = pulumi.runtime.rpc._special_sig_key
_SECRET_VALUE = pulumi.runtime.rpc._special_secret_sig


def _plain(value: Any, secrets: list[str] | None = None, path: str = "") -> Any:
    """Drop the runtime's wrapper types so inputs compare and serialize as plain data.

    Secret-wrapped values are unwrapped; their paths are appended to `secrets`.
    """
    if isinstance(value, Mapping):
        if value.get(_SECRET_SIG) == _SECRET_VALUE:
            if secrets is not None:
                secrets.append(path)
            return _plain(value.get("value"), secrets, path)
        return {k: _plain(v, secrets, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, secrets, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, pulumi.FileArchive | pulumi.FileAsset):
        return {"file": str(value.path)}
    # The wire format carries every number as a double; give back the integers that were sent.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run_program(
    stack_file: Path | str,
    *,
    overrides: Mapping[str, Any] | None = None,
    remove: tuple[str, ...] = (),
    stack: str | None = None,
    previous_outputs: Mapping[str, Any] | None = None,
) -> ProgramRun:
    """Run `__main__.py` with the config of `stack_file` (plus `overrides`, minus `remove`).

    `previous_outputs` are the stack outputs of an earlier update (default: a new stack).
    """
    path = Path(stack_file)
    if not path.is_absolute():
        path = ROOT / path
    config, secret_keys = load_stack_config(path)
    for key in remove:
        config.pop(key, None)
    for key, value in (overrides or {}).items():
        value, is_secret = _decrypt_placeholders(key, value)
        if is_secret:
            secret_keys.add(key)
        config[key] = _to_config_string(value)
    stack = stack or stack_name_of(path)
    monitor = None
    if previous_outputs:
        region = config.get("aws:region", "eu-west-1")
        monitor = RecordingMonitor(LiftoffMocks(region=region, previous_outputs=previous_outputs))
    return run_with_config(config, secret_keys=secret_keys, stack=stack, monitor=monitor)


def _ensure_event_loop() -> None:
    """The Pulumi runtime needs a current loop; an earlier `asyncio.run` may have unset it."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_main_program() -> None:
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


def run_with_config(
    config: Mapping[str, str],
    *,
    stack: str,
    secret_keys: set[str] | None = None,
    program: Callable[[], None] = run_main_program,
    monitor: RecordingMonitor | None = None,
) -> ProgramRun:
    """Run `program` (default: the real `__main__.py`) with `config` in the mock runtime."""
    _ensure_event_loop()
    # A run that failed (a refused change, tested on purpose) leaves its error and pending
    # outputs in the runtime's global state; start clean.
    settings.SETTINGS.rpc_manager.clear()
    with settings.SETTINGS.lock:
        settings.SETTINGS.outputs.clear()
    region = config.get("aws:region", "eu-west-1")
    monitor = monitor or RecordingMonitor(LiftoffMocks(region=region))
    settings.ROOT.set(None)
    mocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config), sorted(secret_keys or ()))

    _sync_await(run_pulumi_func(program))

    root = settings.get_root_resource()
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()
    for key, value in getattr(root, "outputs", {}).items():
        output = pulumi.Output.from_input(value)
        outputs[key] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            secret_outputs.add(key)
    return ProgramRun(
        stack=stack,
        resources=monitor.declared,
        outputs=outputs,
        secret_outputs=secret_outputs,
        config=dict(config),
    )
