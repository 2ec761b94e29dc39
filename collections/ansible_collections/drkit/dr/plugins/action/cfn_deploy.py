"""drkit.dr.cfn_deploy: create or update a CloudFormation stack; optionally in the background.

Issue 19: on the recovery clock the regional stack is deployed alongside the promotion. With
amazon.aws.cloudformation under `async` that cost a module start for the deploy and one per
async_status poll (0.5 s each on an idle 2-core machine, 2-4 s under load). This action runs on
the controller and talks to CloudFormation with boto3 directly:

- with `background: true` it forks a detached process that does the deployment and writes its
  result to `job_file` (JSON, written atomically), and returns at once with `job_file`;
- with `job_file` alone (no stack_name) it waits for that background deployment's result and
  returns it (failing when the deployment failed, or after `timeout`);
- otherwise it deploys and waits in the task itself.

A deployment: UpdateStack (or CreateStack when the stack does not exist; "No updates are to be
performed" is no change), then DescribeStacks until the stack reaches a *_COMPLETE status (a
ROLLBACK or FAILED status fails), and returns `stack_outputs` ({OutputKey: OutputValue}) and
`stack_status` read back from that describe, as amazon.aws.cloudformation does.

Options: stack_name, template_body, template_parameters (dict), tags (dict), region,
endpoint_url, background (bool), job_file (path), timeout (seconds, default 300), publish
(with job_file alone: publish the outputs as this custom stat, as set_stats would).
AWS credentials come from the environment (boto3's default chain), as for amazon.aws modules.
Check mode: nothing is deployed (skipped).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from ansible.plugins.action import ActionBase

_DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")


def deploy(args: dict[str, Any]) -> dict[str, Any]:
    """The deployment itself: a result dict as the task returns it."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    kw = {"region_name": args["region"]}
    if args.get("endpoint_url"):
        kw["endpoint_url"] = args["endpoint_url"]
    name = args["stack_name"]
    try:
        cfn = boto3.client("cloudformation", **kw)
        params = [{"ParameterKey": str(k), "ParameterValue": str(v)}
                  for k, v in (args.get("template_parameters") or {}).items()]
        tags = [{"Key": str(k), "Value": str(v)} for k, v in (args.get("tags") or {}).items()]
        body = {"StackName": name, "TemplateBody": args["template_body"],
                "Parameters": params, "Tags": tags}
        changed = True
        try:
            cfn.describe_stacks(StackName=name)
            exists = True
        except ClientError as e:
            if "does not exist" not in str(e):
                raise
            exists = False
        if exists:
            try:
                cfn.update_stack(**body)
            except ClientError as e:
                if "No updates are to be performed" not in str(e):
                    raise
                changed = False
        else:
            cfn.create_stack(**body)
        deadline = time.monotonic() + float(args.get("timeout") or 300)
        while True:
            stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
            status = stack["StackStatus"]
            if status in _DONE:
                break
            if "ROLLBACK" in status or status.endswith("FAILED"):
                return {"failed": True, "changed": changed, "stack_status": status,
                        "msg": "stack %s: %s (%s)" % (name, status,
                                                      stack.get("StackStatusReason", ""))}
            if time.monotonic() > deadline:
                return {"failed": True, "changed": changed, "stack_status": status,
                        "msg": "stack %s still %s after %ss" % (name, status, args["timeout"])}
            time.sleep(0.2)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
        return {"changed": changed, "stack_status": status, "stack_outputs": outputs}
    except (BotoCoreError, ClientError) as e:
        return {"failed": True, "msg": "stack %s: %s" % (name, e)}


def _write(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _background(args: dict[str, Any], job_file: str) -> int:
    """Fork a detached process (double fork, its own session) that deploys and writes the
    result; return its pid. It must never return into Ansible's worker: os._exit."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:  # intermediate
        try:
            os.close(r)
            os.setsid()
            second = os.fork()
            if second == 0:  # the deployer
                try:
                    os.close(w)
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    try:
                        result = deploy(args)
                    except Exception as e:  # noqa: BLE001 - reported in the result file
                        result = {"failed": True, "msg": "%s: %s" % (type(e).__name__, e)}
                    _write(job_file, result)
                finally:
                    os._exit(0)
            os.write(w, str(second).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
    with os.fdopen(r) as f:
        return int(f.read() or 0)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "stack_name": {"type": "str"},
            "template_body": {"type": "str"},
            "template_parameters": {"type": "dict", "default": {}},
            "tags": {"type": "dict", "default": {}},
            "region": {"type": "str"},
            "endpoint_url": {"type": "str"},
            "background": {"type": "bool", "default": False},
            "job_file": {"type": "path"},
            "timeout": {"type": "float", "default": 300.0},
            "publish": {"type": "str"},
        }, required_together=[("stack_name", "template_body", "region")],
            required_one_of=[("stack_name", "job_file")])
        if self._task.check_mode:
            result.update(skipped=True, msg="no stack is deployed in check mode")
            return result
        if not args["stack_name"]:
            result.update(self._wait(args["job_file"], args["timeout"]))
            if args["publish"] and "stack_outputs" in result:
                # The custom stat set_stats would publish, without a task of its own.
                result["ansible_stats"] = {"data": {args["publish"]: result["stack_outputs"]},
                                           "per_host": False, "aggregate": False}
            return result
        if not args["background"]:
            result.update(deploy(args))
            return result
        job_file = args["job_file"]
        if not job_file:
            fd, job_file = tempfile.mkstemp(prefix="drkit-cfn-", suffix=".json")
            os.close(fd)
        if os.path.exists(job_file):
            os.unlink(job_file)  # a result file of an earlier run must not be read as this one's
        pid = _background(args, job_file)
        result.update(changed=True, started=True, job_file=job_file, pid=pid)
        return result

    @staticmethod
    def _wait(job_file: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not os.path.exists(job_file):
            if time.monotonic() > deadline:
                return {"failed": True, "msg": "the stack deployment writing %s did not finish "
                        "in %gs" % (job_file, timeout)}
            time.sleep(0.05)
        with open(job_file, encoding="utf-8") as f:
            return dict(json.load(f), finished=True)
