"""liftoff: what the platform's operations DAGs share. Not a DAG (`.airflowignore` skips it);
the DAG files import it from their bundle's folder, which Airflow puts on `sys.path`.

Each operation runs in the platform's own runtime, chosen by Airflow's `[liftoff]` configuration
section (set by liftoff):

- `target = kubernetes`: a `KubernetesPodOperator` pod of the services image
  (`python -m services <arguments>`), labelled with the component the stack's NetworkPolicies
  admit where that operation needs to go, its credentials mounted read-only from Secrets,
  restricted security context, no service-account token. Its whole environment is
  `<pod>_environment` and its Secrets `<pod>_secrets`, both JSON, both built by liftoff (the
  environment by the process's own contract in `services/`): these files pass them through and
  name no variable. Without them the stack cannot run that operation, and the task says why.
- `target = aws` (MWAA): invokes the ops function synchronously with a JSON payload and fails
  if the function failed. `reconcile_function` names it; `regulation_function` too when the
  stack gave it what regulations need. A Lambda function runs at most 15 minutes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import task

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
except ImportError:  # Airflow 3.0 (MWAA)
    from airflow.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)

SERVICES_UID = 10001  # the services image's user
LAMBDA_TIMEOUT = timedelta(minutes=15)  # the longest a Lambda function may run
FUNCTION = "reconcile_function"  # the ops function: reconcile and rebuild payloads
TARGETS = ("kubernetes", "aws")


def setting(key: str) -> str:
    return (conf.get("liftoff", key, fallback="") or "").strip()


def skipped(task_id: str, reason: str, *, fail: bool = False) -> Any:
    """A task that only says why nothing runs: skipped, or failed with ``fail`` (an operation
    asked for by hand must not look done)."""

    @task(task_id=task_id)
    def unavailable() -> None:
        raise (AirflowFailException if fail else AirflowSkipException)(reason)

    return unavailable()


def declare(
    task_id: str, kubernetes: Callable[[], Any], aws: Callable[[], Any], *, fail: bool = False
) -> None:
    """The operation's task for the configured target (inside the DAG's ``with`` block)."""
    target = setting("target")
    if target == "kubernetes":
        kubernetes()
    elif target == "aws":
        aws()
    elif not target:
        reason = "[liftoff] target is not set: this Airflow was not deployed by liftoff"
        skipped(task_id, reason, fail=fail)
    else:
        raise ValueError(f"[liftoff] target = {target!r}: expected 'kubernetes' or 'aws'")


# --- Kubernetes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """One operation's pod; what differs between operations."""

    task_id: str
    name: str
    """The pod's name (``liftoff-<name>``) and its ``app.kubernetes.io/name`` label."""
    configured: str
    """``[liftoff] <configured>_environment`` / ``_secrets``: the pod's environment, Secrets."""
    component: str
    """The ``app.kubernetes.io/component`` label the stack's NetworkPolicies select on."""
    arguments: list[str]
    """``python -m services`` arguments (templated)."""
    missing: str
    """Why the stack runs no such pod (said when ``<configured>_environment`` is empty)."""
    deadline: timedelta = timedelta(minutes=45)
    cpu_request: str = "100m"
    fail_when_missing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    """More KubernetesPodOperator arguments."""
    environment: Mapping[str, str] | None = None
    """The environment and Secrets when given whole (the replay's, one pod per target),
    instead of ``<configured>_environment`` / ``_secrets``."""
    secrets: list[dict[str, str]] | None = None


def pod_task(pod: Pod) -> Any:
    """The KubernetesPodOperator of ``pod`` (or a task saying why the stack has none)."""
    missing = [key for key in ("stack", "namespace", "services_image") if not setting(key)]
    if missing:
        raise ValueError(f"[liftoff] target = kubernetes needs {', '.join(missing)}")
    environment = json.dumps(pod.environment) if pod.environment is not None else None
    environment = environment or setting(f"{pod.configured}_environment")
    if not environment:
        reason = f"no {pod.name} pod is configured ([liftoff] {pod.configured}_environment is "
        return skipped(pod.task_id, reason + f"empty: {pod.missing})", fail=pod.fail_when_missing)

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    def mounted(secret_name: str, key: str, directory: str) -> Secret:
        """The Secret's one key as a read-only file ``<directory>/<key>``."""
        return Secret("volume", directory, secret_name, items=[k8s.V1KeyToPath(key=key, path=key)])

    secrets = [
        mounted(item["secret"], item["key"], item["directory"])
        for item in (
            pod.secrets
            if pod.secrets is not None
            else json.loads(setting(f"{pod.configured}_secrets") or "[]")
        )
    ]
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    return KubernetesPodOperator(
        task_id=pod.task_id,
        name=f"liftoff-{pod.name}",
        namespace=setting("namespace"),
        image=setting("services_image"),
        image_pull_policy="IfNotPresent",
        arguments=pod.arguments,
        labels={
            "app.kubernetes.io/instance": setting("stack"),
            "app.kubernetes.io/component": pod.component,
            "app.kubernetes.io/name": pod.name,
            "app.kubernetes.io/part-of": "liftoff",
        },
        env_vars=json.loads(environment),
        secrets=secrets,
        # The root filesystem is read-only: a small scratch /tmp.
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi"))],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=SERVICES_UID,
            run_as_group=SERVICES_UID,
            fs_group=SERVICES_UID,
            seccomp_profile=seccomp,
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        ),
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": pod.cpu_request, "memory": "256Mi"},
            limits={"cpu": "1", "memory": "1Gi"},
        ),
        automount_service_account_token=False,
        get_logs=True,
        do_xcom_push=False,  # the summary is in the task log; no sidecar container needed
        log_events_on_failure=True,
        on_finish_action="delete_succeeded_pod",  # failed pods stay for inspection
        startup_timeout_seconds=600,
        active_deadline_seconds=int(pod.deadline.total_seconds()),
        execution_timeout=pod.deadline + timedelta(minutes=10),
        **pod.extra,
    )


# --- AWS (MWAA) -----------------------------------------------------------------------------------


def invoke(function: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Invoke ``function`` synchronously with ``payload``; its answer, or raise."""
    import boto3
    import botocore.config

    client = boto3.client(
        "lambda",
        config=botocore.config.Config(
            # Wait as long as the function may run; keep the idle connection alive meanwhile.
            read_timeout=int(LAMBDA_TIMEOUT.total_seconds()) + 60,
            connect_timeout=10,
            tcp_keepalive=True,
            retries={"mode": "standard", "total_max_attempts": 1},  # Airflow retries the task
        ),
    )
    response = client.invoke(
        FunctionName=function,
        InvocationType="RequestResponse",
        Payload=json.dumps(payload).encode(),
    )
    answer = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or response.get("StatusCode") != 200:
        detail = answer if not isinstance(answer, dict) else answer.get("errorMessage", answer)
        raise RuntimeError(f"{function} failed to {what}: {detail}")
    log.info("%s: %s", what, json.dumps(answer, sort_keys=True))
    return answer


def invoke_until_finished(function: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
    """:func:`invoke`, again while the answer says ``"finished": false`` (the invocation's time
    ran out, its progress kept); bounded by the task's deadline."""
    while True:
        answer = invoke(function, payload, what)
        if answer.get("finished") is not False:
            return answer
        log.info("%s: not finished within the invocation, invoking it again", what)


def function_task(
    task_id: str,
    payload: str,
    what: str,
    *,
    key: str = FUNCTION,
    fail: bool = False,
    until_finished: timedelta | None = None,
) -> Any:
    """A task invoking the ops function named by ``[liftoff] <key>`` with ``payload`` (a
    template rendering to a JSON object), or saying why the stack has none. With
    ``until_finished`` (the task's deadline), invoked again while the answer says
    ``"finished": false`` (stopped by the invocation's time, its progress kept)."""
    function = setting(key)
    if not function:
        reason = (
            f"no ops function is configured for this ([liftoff] {key} is empty: the stack has "
            f"no warehouse): nothing can {what}"
        )
        return skipped(task_id, reason, fail=fail)

    deadline = until_finished or LAMBDA_TIMEOUT + timedelta(minutes=2)

    @task(task_id=task_id, execution_timeout=deadline)
    def invoke_function(function: str, payload: str) -> dict[str, Any]:
        call = invoke if until_finished is None else invoke_until_finished
        return call(function, json.loads(payload), what)

    return invoke_function(function=function, payload=payload)
