"""scripts/deploy.py and infra/stack.py: deploy and teardown from every stack state, driven
by botocore's Stubber (CloudFormation's answers, no network), and errors as one line."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from infra import stack

ROOT = Path(__file__).resolve().parents[2]
NAME = "promptcanvas-dev"
URL = "https://artifacts.s3.eu-west-1.amazonaws.com/promptcanvas-dev/template-x.json"


def client(service: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    ).client(service, endpoint_url="https://stubbed.invalid")


@pytest.fixture
def cfn() -> Iterator[tuple[Any, Stubber]]:
    c = client("cloudformation")
    with Stubber(c) as stubber:
        yield c, stubber
        stubber.assert_no_pending_responses()


def waiting() -> stack.Waiting:
    clock = iter(range(10**6))
    return stack.Waiting(poll_s=0, sleep=lambda _s: None, clock=lambda: float(next(clock)))


def missing(stubber: Stubber) -> None:
    stubber.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message=f"Stack with id {NAME} does not exist",
        expected_params={"StackName": NAME},
    )


def status(stubber: Stubber, value: str, outputs: bool = True, parameters: tuple[str, ...] = ()) -> None:
    item: dict[str, Any] = {
        "StackName": NAME,
        "StackStatus": value,
        "CreationTime": "2026-11-30T00:00:00Z",
        "Parameters": [{"ParameterKey": k, "ParameterValue": "v"} for k in parameters],
    }
    if outputs:
        item["Outputs"] = [{"OutputKey": "WebUrl", "OutputValue": "https://x.cloudfront.net"}]
    stubber.add_response("describe_stacks", {"Stacks": [item]}, {"StackName": NAME})


def change_set(stubber: Stubber, kind: str, final: str = "CREATE_COMPLETE", reason: str = "") -> None:
    stubber.add_response(
        "create_change_set",
        {"Id": "arn:cs", "StackId": "arn:stack"},
        {
            "StackName": NAME,
            "ChangeSetName": "deploy-test",
            "ChangeSetType": kind,
            "TemplateURL": URL,
            "Parameters": ANY,
            "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            "Tags": ANY,
        },
    )
    params = {"StackName": NAME, "ChangeSetName": "deploy-test"}
    stubber.add_response("describe_change_set", {"Status": "CREATE_PENDING"}, params)
    stubber.add_response("describe_change_set", {"Status": final, "StatusReason": reason}, params)


def execute(stubber: Stubber, *statuses: str) -> None:
    stubber.add_response("execute_change_set", {}, {"StackName": NAME, "ChangeSetName": "deploy-test"})
    for value in statuses:
        status(stubber, value)


def change(seen: list[list[str]] | None = None) -> stack.ChangeSet:
    def parameters(previous: Any) -> list[dict[str, Any]]:
        if seen is not None:
            seen.append(list(previous))
        return [{"ParameterKey": "Stage", "ParameterValue": "dev"}]

    return stack.ChangeSet(
        template_url=URL,
        parameters=parameters,
        capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        tags=[{"Key": "app", "Value": "promptcanvas"}],
        name="deploy-test",
    )


def run(cfn: tuple[Any, Stubber], seen: list[list[str]] | None = None) -> str:
    return stack.deploy(cfn[0], NAME, change(seen), waiting(), say=lambda _m: None)


# -- deploy ---------------------------------------------------------------------------------------


def test_first_deploy_creates(cfn: tuple[Any, Stubber]) -> None:
    missing(cfn[1])
    change_set(cfn[1], "CREATE")
    execute(cfn[1], "CREATE_IN_PROGRESS", "CREATE_COMPLETE")
    seen: list[list[str]] = []
    assert run(cfn, seen) == "created"
    assert seen == [[]], "a create has no previous parameters"


def test_update_keeps_previous_parameters(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "UPDATE_COMPLETE", parameters=("Stage", "ClerkIssuer"))
    change_set(cfn[1], "UPDATE")
    execute(cfn[1], "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE")
    seen: list[list[str]] = []
    assert run(cfn, seen) == "updated"
    assert seen == [["Stage", "ClerkIssuer"]]


def test_update_without_changes_is_success(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "CREATE_COMPLETE")
    change_set(
        cfn[1],
        "UPDATE",
        final="FAILED",
        reason="The submitted information didn't contain changes. Submit different information to create a change set.",
    )
    cfn[1].add_response("delete_change_set", {}, {"StackName": NAME, "ChangeSetName": "deploy-test"})
    assert run(cfn) == "unchanged"


def test_failed_first_deploy_is_deleted_then_created(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "ROLLBACK_COMPLETE", outputs=False)  # deploy looks
    status(cfn[1], "ROLLBACK_COMPLETE", outputs=False)  # delete looks
    cfn[1].add_response("delete_stack", {}, {"StackName": NAME})
    status(cfn[1], "DELETE_IN_PROGRESS", outputs=False)
    missing(cfn[1])
    change_set(cfn[1], "CREATE")
    execute(cfn[1], "CREATE_COMPLETE")
    assert run(cfn) == "created"


def test_leftover_review_is_created(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "REVIEW_IN_PROGRESS", outputs=False)
    change_set(cfn[1], "CREATE")
    execute(cfn[1], "CREATE_IN_PROGRESS", "CREATE_COMPLETE")
    assert run(cfn) == "created"


def test_an_operation_in_progress_is_waited_for(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "UPDATE_IN_PROGRESS")
    status(cfn[1], "UPDATE_ROLLBACK_IN_PROGRESS")
    status(cfn[1], "UPDATE_ROLLBACK_COMPLETE")
    change_set(cfn[1], "UPDATE")
    execute(cfn[1], "UPDATE_COMPLETE")
    assert run(cfn) == "updated"


def test_a_failing_first_create_says_why_on_one_line(cfn: tuple[Any, Stubber]) -> None:
    missing(cfn[1])
    change_set(cfn[1], "CREATE")
    execute(cfn[1], "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE")
    events = [
        {
            "StackId": "arn:stack",
            "EventId": "1",
            "StackName": NAME,
            "LogicalResourceId": "ImagesBucket",
            "ResourceStatus": "CREATE_FAILED",
            "ResourceStatusReason": "promptcanvas-dev-images-1-eu-west-1 already exists\nin another stack",
            "Timestamp": "2026-11-30T00:00:00Z",
        }
    ]
    cfn[1].add_response("describe_stack_events", {"StackEvents": events}, {"StackName": NAME})
    with pytest.raises(stack.StackError) as caught:
        run(cfn)
    message = str(caught.value)
    assert "\n" not in message
    assert "ROLLBACK_COMPLETE" in message and "ImagesBucket: promptcanvas-dev-images-1-eu-west-1 already" in message
    assert "next deploy deletes and recreates" in message


def test_a_failed_change_set_is_an_error(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "UPDATE_COMPLETE")
    change_set(cfn[1], "UPDATE", final="FAILED", reason="Template format error: Unresolved resource dependencies")
    cfn[1].add_response("delete_change_set", {}, {"StackName": NAME, "ChangeSetName": "deploy-test"})
    with pytest.raises(stack.StackError, match="Unresolved resource dependencies"):
        run(cfn)


def test_update_rollback_failed_names_the_repair(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "UPDATE_ROLLBACK_FAILED")
    with pytest.raises(stack.StackError, match="continue-update-rollback"):
        run(cfn)


# -- teardown -------------------------------------------------------------------------------------


def test_delete_without_a_stack(cfn: tuple[Any, Stubber]) -> None:
    missing(cfn[1])
    assert stack.delete(cfn[0], NAME, waiting(), say=lambda _m: None) is False


@pytest.mark.parametrize("state", ["ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS", "CREATE_COMPLETE"])
def test_teardown_deletes_a_stack_without_outputs(deploy_script: Any, cfn: tuple[Any, Stubber], state: str) -> None:
    s3 = client("s3")
    with Stubber(s3) as s3_stub:
        status(cfn[1], state, outputs=False)
        detail = {
            "StackResourceDetail": {
                "LogicalResourceId": "WebBucket",
                "PhysicalResourceId": "web-bucket-x",
                "ResourceType": "AWS::S3::Bucket",
                "LastUpdatedTimestamp": "2026-11-30T00:00:00Z",
                "ResourceStatus": "CREATE_COMPLETE",
            }
        }
        if state == "REVIEW_IN_PROGRESS":
            cfn[1].add_client_error(
                "describe_stack_resource", "ValidationError", "Resource WebBucket does not exist for stack"
            )
        else:
            cfn[1].add_response(
                "describe_stack_resource", detail, {"StackName": NAME, "LogicalResourceId": "WebBucket"}
            )
            if state == "ROLLBACK_COMPLETE":
                s3_stub.add_client_error("list_object_versions", "NoSuchBucket", "The specified bucket does not exist")
            else:
                versions = {"Versions": [{"Key": "index.html", "VersionId": "null"}], "IsTruncated": False}
                s3_stub.add_response("list_object_versions", versions, {"Bucket": "web-bucket-x"})
                s3_stub.add_response(
                    "delete_objects",
                    {},
                    {
                        "Bucket": "web-bucket-x",
                        "Delete": {"Objects": [{"Key": "index.html", "VersionId": "null"}], "Quiet": True},
                    },
                )
        status(cfn[1], state, outputs=False)
        cfn[1].add_response("delete_stack", {}, {"StackName": NAME})
        status(cfn[1], "DELETE_IN_PROGRESS", outputs=False)
        missing(cfn[1])
        assert deploy_script.remove_stack(cfn[0], s3, NAME, waiting()) is True
        s3_stub.assert_no_pending_responses()


def test_a_failed_deletion_is_an_error(cfn: tuple[Any, Stubber]) -> None:
    status(cfn[1], "UPDATE_COMPLETE")
    cfn[1].add_response("delete_stack", {}, {"StackName": NAME})
    status(cfn[1], "DELETE_IN_PROGRESS")
    status(cfn[1], "DELETE_FAILED")
    events = [
        {
            "StackId": "arn:stack",
            "EventId": "1",
            "StackName": NAME,
            "LogicalResourceId": "WebBucket",
            "ResourceStatus": "DELETE_FAILED",
            "ResourceStatusReason": "The bucket you tried to delete is not empty",
            "Timestamp": "2026-11-30T00:00:00Z",
        }
    ]
    cfn[1].add_response("describe_stack_events", {"StackEvents": events}, {"StackName": NAME})
    with pytest.raises(stack.StackError, match="WebBucket: The bucket you tried to delete is not empty"):
        stack.delete(cfn[0], NAME, waiting(), say=lambda _m: None)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod", "feature-x", "pr-1234", "a", "q" * 16])
def test_any_stage_name_of_the_pattern_is_accepted(deploy_script: Any, stage: str) -> None:
    assert deploy_script.stage_name(stage) == stage


@pytest.mark.parametrize("stage", ["", "Dev", "1dev", "-dev", "dev_1", "q" * 17, "dev/../prod", "dev prod"])
def test_other_stage_names_are_refused(deploy_script: Any, stage: str) -> None:
    with pytest.raises(SystemExit) as caught:
        deploy_script.main(["outputs", "--stage", stage])
    assert caught.value.code == 2


def test_a_stage_too_long_for_the_bucket_name_is_refused(deploy_script: Any) -> None:
    deploy_script.check_stage_fits("q" * 16, "eu-west-1")
    with pytest.raises(deploy_script.DeployError, match="too long"):
        deploy_script.check_stage_fits("q" * 16, "ap-southeast-3")
    deploy_script.check_stage_fits("q" * 16, "eu-west-1", ["ProcessWebhooksQueue"])  # 63 of 64 characters
    with pytest.raises(deploy_script.DeployError, match="function ProcessWebhooksQueueXY"):
        deploy_script.check_stage_fits("q" * 16, "eu-west-1", ["ProcessWebhooksQueueXY"])


class _Garbage(http.server.BaseHTTPRequestHandler):
    """An endpoint that answers every request with something that is not AWS's XML."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html><body>502 Bad Gateway</body"
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def garbage_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["outputs", "teardown"])
def test_an_unparseable_aws_answer_is_one_line_and_exit_1(garbage_endpoint: str, command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=garbage_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_MAX_ATTEMPTS="1",
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deploy.py"), command, "--stage", "feature-x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "could not be parsed" in lines[0]


def test_an_aws_error_is_one_line(deploy_script: Any) -> None:
    from botocore.exceptions import ClientError

    exc = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "User: arn:aws:iam::1:user/x\nis not authorized"}},
        "CreateChangeSet",
    )
    assert deploy_script.one_line(exc) == "CreateChangeSet: AccessDenied: User: arn:aws:iam::1:user/x is not authorized"
