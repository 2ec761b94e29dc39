"""drkit.dr.healthz: GET a list of health URLs at once; every one must answer 200.

Issue 19: preflight checked each payments instance's /healthz with a looped
ansible.builtin.uri, a module start per instance (about 0.3 s each on an idle 2-core machine,
2-3 s under load). When the task's host is reached with the local connection this action asks
all of them side by side from the controller's worker; on any other connection (a region's host
over SSH in the namespaces topology, issue 17, where the instances listen inside the region) it
runs the drkit.dr.healthz module once on that host, which asks them side by side there (a uri
module run per URL cost 2.2 s for four instances over SSH).

Options: urls (list of str, required), timeout (seconds per request, default 2).
Returns `results`: [{url, status}] (status None when there was no answer, with `msg`), in the
order given. Fails unless every URL answered 200.
"""

from __future__ import annotations

import urllib.error
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible.module_utils import urls
from ansible.plugins.action import ActionBase


def _get(url: str, timeout: float) -> dict[str, Any]:
    # Ansible's open_url, as ansible.builtin.uri uses on the other path (same TLS and proxy
    # handling); it raises urllib's errors, and its own ConnectionError for proxies and TLS.
    try:
        with urls.open_url(url, timeout=timeout) as r:
            return {"url": url, "status": r.status}
    except urllib.error.HTTPError as e:
        return {"url": url, "status": e.code, "msg": str(e)}
    except (OSError, ValueError, urls.ConnectionError) as e:
        return {"url": url, "status": None, "msg": str(e)}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "urls": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "float", "default": 2.0},
        })
        urls, timeout = args["urls"], args["timeout"]
        if getattr(self._connection, "transport", "") == "local":
            with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
                results = list(pool.map(lambda u: _get(u, timeout), urls))
        else:
            # One module run on that host asks them all (plugins/modules/healthz.py).
            res = self._execute_module(module_name="drkit.dr.healthz", task_vars=task_vars,
                                       module_args={"urls": urls, "timeout": timeout})
            if res.get("failed") or not isinstance(res.get("results"), list):
                result.update(failed=True, changed=False,
                              msg="could not check health on %s: %s" % (
                                  task_vars.get("inventory_hostname"), res.get("msg") or res))
                return result
            results = res["results"]
        bad = [r for r in results if r["status"] != 200]
        result.update(changed=False, results=results)
        if bad:
            result.update(failed=True, msg="not healthy: %s" % ", ".join(
                "%s (%s)" % (r["url"], r.get("msg") or r["status"]) for r in bad))
        return result
