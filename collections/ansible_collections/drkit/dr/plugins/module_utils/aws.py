"""drkit.dr's AWS client set-up, shared by its AWS modules (one copy instead of one a module).

boto3 is imported here, on the controller, when a module runs: drkit ships it. A module that
cannot import it fails with one line saying so, never a traceback.
"""

from __future__ import annotations


def aws_client(module, service, region=None):
    """A boto3 client for `service` in `region` (default: the module's `region` parameter), at
    the module's `endpoint_url` when given (an emulated control plane: moto)."""
    try:
        import boto3
    except ImportError:
        module.fail_json(msg="boto3 is required on the controller (it comes with drkit)")
    p = module.params
    return boto3.client(service, region_name=region or p["region"],
                        endpoint_url=p.get("endpoint_url") or None)


def aws_errors():
    """(ClientError, (BotoCoreError, ResponseParserError)): the API said no / the API could not
    be reached or did not answer as AWS does (an emulator's HTTP 500 for an action it lacks)."""
    import botocore.exceptions
    import botocore.parsers

    return (botocore.exceptions.ClientError,
            (botocore.exceptions.BotoCoreError, botocore.parsers.ResponseParserError))
