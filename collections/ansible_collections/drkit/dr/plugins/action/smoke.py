"""drkit.dr.smoke: run the payment flows through the public entry point until every flow passes.

An action plugin, so it runs on the controller: the flows are a client of the public entry
point and belong where drkit runs, as a customer would reach the service, not on a managed
host. It also skips a module's interpreter start, which would be on the recovery clock.

Options: entry (URL, required), flows (names of the pack's flows, required), pack (the
environment's flow pack as plain data, default: the lab's flows/payments-lab.yml), ca_file (the
CA the entry point's certificate must chain to), timeout (seconds to wait for an all-green
round, default 60), interval (seconds between rounds, default 0.05), token_file (a file holding
the API's bearer token; the lab's API refuses requests without it).

Returns `smoke`: drkit.flows' outcome (green, started_at, green_at, attempts, results
and not_reached, the flows the last round did not run after a failure), whose
green_at stops the drill's clock. Flows that stay red are not a task failure (the drill's
verdict names them); bad arguments are.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "entry": {"type": "str", "required": True},
            "flows": {"type": "list", "elements": "str", "required": True},
            "ca_file": {"type": "str"},
            "timeout": {"type": "float", "default": 60.0},
            "interval": {"type": "float", "default": 0.05},
            "token_file": {"type": "str"},
            "pack": {"type": "dict"},
        })
        if self._task.check_mode:
            result.update(skipped=True, msg="the flows write payments: not run in check mode")
            return result

        from drkit.errors import BadInput
        from drkit.flows import FlowPack, read_token, smoke_until_green

        try:
            token = read_token(args["token_file"]) if args["token_file"] else None
            # The environment's flow pack (issue 14): plain data, validated by drkit; its
            # secrets are read here, from the environment or their files, never passed in.
            pack = FlowPack.from_json(args["pack"]) if args["pack"] else None
            outcome = smoke_until_green(args["entry"], args["ca_file"] or None, args["flows"],
                                        args["timeout"], args["interval"], token=token,
                                        pack=pack)
        except BadInput as e:
            result.update(failed=True, msg=str(e))
            return result
        result.update(changed=False, smoke={"entry": args["entry"], **outcome.to_json()})
        return result
