"""The CloudFormation stack's life cycle for ``scripts/deploy.py``: deploy (create, update,
or nothing to do) and delete, from whatever state an earlier run left the stack in.

Every function takes a boto3 CloudFormation client, so tests drive it with botocore's
``Stubber``. States (AWS CloudFormation user guide, "Stack status codes"):

=============================================  ===================================================
state                                          deploy does
=============================================  ===================================================
no stack                                       create (a ``CREATE`` change set)
``REVIEW_IN_PROGRESS``                         create: a change set was made but never executed;
                                               the stack has no resources (a ``CREATE`` change set
                                               is allowed on it)
``ROLLBACK_COMPLETE``, ``ROLLBACK_FAILED``,    a failed first deploy, which CloudFormation will
``CREATE_FAILED``, ``DELETE_FAILED``           not update: delete it, then create it again
``CREATE/UPDATE/IMPORT_COMPLETE``,             update (an ``UPDATE`` change set; one without
``UPDATE_ROLLBACK_COMPLETE``,                  changes is deleted and the deploy reports
``IMPORT_ROLLBACK_COMPLETE``                   "unchanged")
``UPDATE_ROLLBACK_FAILED``                     refuse, with the command that repairs it
any other ``*_IN_PROGRESS``                    wait until it settles, then decide
=============================================  ===================================================

Delete works from every state (``DELETE_FAILED`` is retried once the caller emptied
what blocked it) and succeeds when the stack is gone. Every failure is a
:class:`StackError` with a one-line message naming the stack, the state and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A stack CloudFormation will not update: the first create failed (or its deletion did).
RECREATE = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"})
#: A stack that exists and can be updated.
UPDATABLE = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
#: Created by a change set that was never executed: no resources.
REVIEW = "REVIEW_IN_PROGRESS"
NEEDS_REPAIR = frozenset({"UPDATE_ROLLBACK_FAILED"})
#: CloudFormation's StatusReason for a change set without changes (both wordings occur).
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
STACK_WAIT_S = 60 * 60  # a new CloudFront distribution alone can take 15 minutes
CHANGE_SET_WAIT_S = 10 * 60
POLL_S = 10.0


class StackError(Exception):
    """A stack operation failed; ``str()`` is one line saying which and why."""


@dataclass
class Waiting:
    """How to wait: ``sleep`` (seconds) and ``clock`` (monotonic seconds) are injectable
    for tests; ``poll_s`` between two reads; ``stack_s``/``change_set_s`` deadlines."""

    poll_s: float = POLL_S
    stack_s: float = STACK_WAIT_S
    change_set_s: float = CHANGE_SET_WAIT_S
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    """describe_stacks' answer for a stack that does not exist (a ValidationError)."""
    response = getattr(exc, "response", None) or {}
    message = str(response.get("Error", {}).get("Message", ""))
    return _error_code(exc) == "ValidationError" and "does not exist" in message


def describe(cfn: Any, name: str) -> dict[str, Any] | None:
    """The stack (``describe_stacks``' item), or None when there is none (a deleted stack
    is not returned by name).

    Raises:
        botocore.exceptions.ClientError: any other error.
    """
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if _is_missing(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
        return None
    return stacks[0]


def failure_reasons(cfn: Any, name: str, limit: int = 5) -> str:
    """The latest failed resource events, ``"Logical: reason; ..."`` (best effort: ``""``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except (BotoCoreError, ClientError):
        return ""
    failed = [
        f"{e['LogicalResourceId']}: {_one_line(e.get('ResourceStatusReason', ''))}"
        for e in events
        if e.get("ResourceStatus", "").endswith("FAILED") and e.get("ResourceStatusReason")
    ]
    return "; ".join(failed[:limit])


def settle(cfn: Any, name: str, waiting: Waiting, done: frozenset[str] | None = None) -> dict[str, Any] | None:
    """Wait until the stack is in a state that is not ``*_IN_PROGRESS`` (``REVIEW_IN_PROGRESS``
    counts as settled: nothing progresses in it) or gone; with ``done``, until its status is
    one of them (or gone). Returns the stack or None.

    Raises:
        StackError: still in progress at the deadline.
    """
    deadline = waiting.clock() + waiting.stack_s
    while True:
        stack = describe(cfn, name)
        if stack is None:
            return None
        status = stack["StackStatus"]
        if done is not None and status in done:
            return stack
        if done is None and (not status.endswith("_IN_PROGRESS") or status == REVIEW):
            return stack
        if waiting.clock() >= deadline:
            raise StackError(f"stack {name} is still {status} after {waiting.stack_s / 60:.0f} min")
        waiting.sleep(waiting.poll_s)


def delete(cfn: Any, name: str, waiting: Waiting, say: Callable[[str], None] = print) -> bool:
    """Delete the stack, whatever its state, and wait until it is gone. Returns False when
    there was no stack.

    Raises:
        StackError: the deletion failed (``DELETE_FAILED``: the resources that blocked it).
    """
    stack = settle(cfn, name, waiting)
    if stack is None:
        return False
    say(f"deleting stack {name} ({stack['StackStatus']})")
    cfn.delete_stack(StackName=name)
    stack = settle(cfn, name, waiting)
    if stack is not None:
        reasons = failure_reasons(cfn, name)
        raise StackError(f"stack {name} could not be deleted ({stack['StackStatus']}): {reasons or 'no reason given'}")
    return True


@dataclass(frozen=True)
class ChangeSet:
    """What to deploy: ``template_url`` (S3 URL), ``parameters(previous_keys)`` -> the
    CloudFormation parameter list (previous keys are empty on a create), ``capabilities``, ``tags``."""

    template_url: str
    parameters: Callable[[Sequence[str]], list[dict[str, Any]]]
    capabilities: Sequence[str]
    tags: Sequence[Mapping[str, str]]
    name: str = ""


def deploy(cfn: Any, name: str, change: ChangeSet, waiting: Waiting, say: Callable[[str], None] = print) -> str:
    """Bring stack ``name`` to ``change`` from any state (see the module docstring).

    Returns:
        ``"created"``, ``"updated"`` or ``"unchanged"``.

    Raises:
        StackError: the stack needs a manual repair, the change set failed, or the
            operation failed (with the resources' reasons). A failed *first* deploy leaves
            the stack in ``ROLLBACK_COMPLETE``; the next deploy deletes and recreates it.
    """
    stack = settle(cfn, name, waiting)
    status = stack["StackStatus"] if stack else None
    if status in NEEDS_REPAIR:
        raise StackError(
            f"stack {name} is {status}: run `aws cloudformation continue-update-rollback --stack-name {name}` "
            "(skip the resources it names if needed), then deploy again"
        )
    if status in RECREATE:
        say(f"stack {name} is {status} (a failed first deploy): deleting it, then creating it again")
        delete(cfn, name, waiting, say)
        stack, status = None, None
    if stack is not None and status not in UPDATABLE and status != REVIEW:
        raise StackError(f"stack {name} is {status}: no deploy path from this state")
    creating = stack is None or status == REVIEW
    previous = [] if creating else [p["ParameterKey"] for p in stack.get("Parameters", [])]  # type: ignore[union-attr]
    change_set = change.name or f"deploy-{time.strftime('%Y%m%d-%H%M%S')}"
    cfn.create_change_set(
        StackName=name,
        ChangeSetName=change_set,
        ChangeSetType="CREATE" if creating else "UPDATE",
        TemplateURL=change.template_url,
        Parameters=change.parameters(previous),
        Capabilities=list(change.capabilities),
        Tags=[dict(tag) for tag in change.tags],
    )
    say(f"change set {change_set} ({'create' if creating else 'update'}) on {name}: computing")
    described = _wait_change_set(cfn, name, change_set, waiting)
    if described["Status"] == "FAILED":
        reason = _one_line(described.get("StatusReason", ""))
        cfn.delete_change_set(StackName=name, ChangeSetName=change_set)
        if any(marker in reason for marker in NO_CHANGES):
            say("no changes")
            return "unchanged"
        raise StackError(f"change set on {name} failed: {reason or 'no reason given'}")
    cfn.execute_change_set(StackName=name, ChangeSetName=change_set)
    goal = "CREATE_COMPLETE" if creating else "UPDATE_COMPLETE"
    say(f"executing: waiting up to {waiting.stack_s / 60:.0f} min for {goal}")
    stack = settle(cfn, name, waiting)
    final = stack["StackStatus"] if stack else "DELETE_COMPLETE"
    if final != goal:
        reasons = failure_reasons(cfn, name)
        hint = " (the next deploy deletes and recreates it)" if final in RECREATE else ""
        raise StackError(f"stack {name} ended {final}{hint}: {reasons or 'no reason given'}")
    return "created" if creating else "updated"


def _wait_change_set(cfn: Any, name: str, change_set: str, waiting: Waiting) -> dict[str, Any]:
    """Poll until the change set is ``CREATE_COMPLETE`` or ``FAILED``.

    Raises:
        StackError: still computing at the deadline.
    """
    deadline = waiting.clock() + waiting.change_set_s
    while True:
        described = cfn.describe_change_set(StackName=name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return described
        if waiting.clock() >= deadline:
            raise StackError(f"change set {change_set} on {name} is still {described['Status']}")
        waiting.sleep(waiting.poll_s)


def outputs(stack: Mapping[str, Any] | None) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of a described stack (empty for None or no outputs)."""
    return {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}


def physical_id(cfn: Any, name: str, logical_id: str) -> str | None:
    """A resource's physical id in the stack, or None (no such resource, or not created)."""
    from botocore.exceptions import ClientError

    try:
        detail = cfn.describe_stack_resource(StackName=name, LogicalResourceId=logical_id)["StackResourceDetail"]
    except ClientError as exc:
        if _error_code(exc) == "ValidationError":
            return None
        raise
    return detail.get("PhysicalResourceId") or None
