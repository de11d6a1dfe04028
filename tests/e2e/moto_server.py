"""Starts moto's server (same arguments as `moto_server`) with fixes for moto bugs that make it
answer differently from real AWS on the wire. Each fix names the bug; remove it once moto
ships a fix. The fixes only touch response serialisation, never moto's behaviour, except where
a fix says it fills in an operation moto 5.2.5 does not implement at all.
"""

import os
import sys

from moto.core import serialize
from moto.server import main

_s3_result_to_response = serialize.S3Serializer._serialized_result_to_response


def _fixed_s3_result_to_response(self, resp, result, shape, serialized_result):
    resp = _s3_result_to_response(self, resp, result, shape, serialized_result)
    # moto 5.2.5 wraps GetBucketVersioning in <GetBucketVersioningResponse>; S3 (and the
    # AWS SDKs' strict XML parsers) use <VersioningConfiguration>.
    if self.operation_model.name == "GetBucketVersioning":
        body = resp.get("body")
        if isinstance(body, bytes):
            resp["body"] = body.replace(b"GetBucketVersioningResponse", b"VersioningConfiguration")
        elif isinstance(body, str):
            resp["body"] = body.replace("GetBucketVersioningResponse", "VersioningConfiguration")
    return resp


serialize.S3Serializer._serialized_result_to_response = _fixed_s3_result_to_response

# Test-only inspection, not a fix: RDS never returns the master password and moto's
# /moto-api/data.json fails on RDS models (write-only properties), so the end-to-end tests read
# the password moto stored for an instance from GET /_kaws/rds-password?region=R&id=ID.
from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: E402

_dispatch = DomainDispatcherApplication.__call__


def _dispatch_with_inspection(self, environ, start_response):
    if environ.get("PATH_INFO") == "/_kaws/rds-password":
        from urllib.parse import parse_qs

        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.rds.models import rds_backends

        query = parse_qs(environ.get("QUERY_STRING", ""))
        region = query.get("region", [""])[0]
        ident = query.get("id", [""])[0].lower()
        db = rds_backends[DEFAULT_ACCOUNT_ID][region].databases.get(ident)
        if db is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        body = (getattr(db, "_master_user_password", None) or "").encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _dispatch_with_inspection

# moto 5.2.5 leaves TableId out of DynamoDB table descriptions; DynamoDB always returns it
# (a UUID fixed for the table's lifetime). Derived from the ARN so it is stable across calls.
import uuid  # noqa: E402

from moto.dynamodb.models.table import Table as _DynamoTable  # noqa: E402

_dynamo_describe = _DynamoTable.describe


def _describe_with_table_id(self, base_key="TableDescription"):
    result = _dynamo_describe(self, base_key)
    result[base_key].setdefault("TableId", str(uuid.uuid5(uuid.NAMESPACE_URL, self.table_arn)))
    return result


_DynamoTable.describe = _describe_with_table_id



# Missing operation, filled in: moto 5.2.5 raises NotImplementedError for MonitorInstances and
# UnmonitorInstances, though it stores and reports an instance's monitoring state
# (RunInstances Monitoring.Enabled, DescribeInstances Monitoring.State). These set that state and
# answer as EC2 does (InstanceMonitorings with the new state).
from moto.core.responses import ActionResult  # noqa: E402
from moto.ec2.responses.monitoring import Monitoring  # noqa: E402


def _set_monitoring(self, state):
    self.error_on_dryrun()
    ids = self._get_param("InstanceIds", [])
    out = []
    for instance in self.ec2_backend.get_multi_instances_by_id(ids):
        instance.monitoring_state = state
        out.append({"InstanceId": instance.id, "Monitoring": {"State": state}})
    return ActionResult({"InstanceMonitorings": out})


Monitoring.monitor_instances = lambda self: _set_monitoring(self, "enabled")
Monitoring.unmonitor_instances = lambda self: _set_monitoring(self, "disabled")


# moto 5.2.5 bug: ReplaceIamInstanceProfileAssociation changes the association but not the
# instance, so DescribeInstances keeps reporting the old profile (EC2 reports the new one).
from moto.ec2.models.iam_instance_profile import IamInstanceProfileAssociationBackend  # noqa: E402

_replace_profile = IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association


def _replace_profile_and_instance(self, association_id, *args, **kwargs):
    association = _replace_profile(self, association_id, *args, **kwargs)
    self.modify_instance_attribute(
        association.instance_id,
        "iam_instance_profile",
        {"Arn": association.iam_instance_profile.arn, "Id": association_id},
    )
    return association


IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association = (
    _replace_profile_and_instance
)


# moto's threaded server checks "does the name exist?" and stores the new resource as two steps
# with model construction in between, so two concurrent creates of one name can both succeed
# (the second silently replacing the first). AWS refuses the second one; the name races of the
# chaos suite need that, so creates by name are made atomic here.
import functools  # noqa: E402
import threading  # noqa: E402

from moto.awslambda.models import LambdaBackend  # noqa: E402
from moto.dynamodb.models import DynamoDBBackend  # noqa: E402
from moto.rds.models import RDSBackend  # noqa: E402
from moto.s3.models import S3Backend  # noqa: E402

_create_lock = threading.RLock()


def _atomic(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _create_lock:
            return method(*args, **kwargs)

    return locked


for _backend, _name in [
    (RDSBackend, "create_db_instance"),
    (DynamoDBBackend, "create_table"),
    (S3Backend, "create_bucket"),
]:
    setattr(_backend, _name, _atomic(getattr(_backend, _name)))

# moto 5.2.5 bug: CreateFunction of a name that exists replaces the function; Lambda answers
# ResourceConflictException "Function already exist".
from moto.awslambda.exceptions import FunctionAlreadyExists  # noqa: E402

_create_function = LambdaBackend.create_function


def _create_function_once(self, spec):
    with _create_lock:
        name = spec.get("FunctionName")
        if name is not None and name in self._lambdas._functions:
            raise FunctionAlreadyExists(name)
        return _create_function(self, spec)


LambdaBackend.create_function = _create_function_once


# moto 5.2.5 ignores RunInstances' ClientToken: a retried launch (an SDK retry after a lost
# answer, or kaws started again after being killed while the first launch was still on its way)
# starts a second instance where EC2 answers with the first one. EC2's idempotency is what kaws
# relies on there (the token is derived from the object's uid), so it is restored here: a
# RunInstances whose token launched instances before answers with that reservation.
from moto.ec2.models.instances import InstanceBackend  # noqa: E402

_run_instances = InstanceBackend.run_instances
_DEFAULT_TOKEN = "ABCDE"  # what moto's response layer passes when the request has no token


def _run_instances_once(self, image_id, count, user_data, security_group_names, **kwargs):
    token = kwargs.get("client_token")
    with _create_lock:
        if token and token != _DEFAULT_TOKEN:
            for reservation in self.reservations.values():
                if any(getattr(i, "client_token", None) == token for i in reservation.instances):
                    return reservation
        return _run_instances(self, image_id, count, user_data, security_group_names, **kwargs)


InstanceBackend.run_instances = _run_instances_once


# Not a fix, an option for the benchmark: werkzeug answers every request with
# `Connection: close`, so each AWS call opens a new TCP connection, where against AWS the SDK
# keeps its connections. With KAWS_MOTO_KEEP_ALIVE=1 connections stay open, so `make bench`
# charges kaws for its calls and not for a new connection per call. werkzeug closes because
# after each request it discards whatever the socket still holds (which, on a kept connection,
# would be the next request); here a request's input stream ends where its body ends, so that
# discarding reads only what is left of the body.
if os.environ.get("KAWS_MOTO_KEEP_ALIVE") == "1":
    from werkzeug.serving import WSGIRequestHandler

    class _BodyReader:
        """The connection's stream, cut off at the end of the request body."""

        def __init__(self, inner, length):
            self.inner = inner
            self.left = length

        def _size(self, size):
            if size is None or size < 0:
                return self.left
            return min(size, self.left)

        def _took(self, data):
            self.left -= len(data)
            return data

        def read(self, size=-1):
            return self._took(self.inner.read(self._size(size))) if self.left else b""

        def read1(self, size=-1):
            return self._took(self.inner.read1(self._size(size))) if self.left else b""

        def readline(self, size=-1):
            return self._took(self.inner.readline(self._size(size))) if self.left else b""

        def readinto(self, b):
            if not self.left:
                return 0
            view = memoryview(b)[: self.left]
            n = self.inner.readinto(view) or 0
            self.left -= n
            return n

        def __getattr__(self, name):
            return getattr(self.inner, name)

    _send_header = WSGIRequestHandler.send_header
    _run_wsgi = WSGIRequestHandler.run_wsgi

    def _send_header_keep_alive(self, keyword, value):
        if keyword.lower() == "connection" and value.lower() == "close":
            return
        _send_header(self, keyword, value)

    def _run_wsgi_keep_alive(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # No length to stop at (the SDKs send one): werkzeug's own way, one request.
            _send_header(self, "Connection", "close")
            return _run_wsgi(self)
        stream = self.rfile
        self.rfile = _BodyReader(stream, int(self.headers.get("Content-Length") or 0))
        try:
            return _run_wsgi(self)
        finally:
            self.rfile = stream

    WSGIRequestHandler.send_header = _send_header_keep_alive
    WSGIRequestHandler.run_wsgi = _run_wsgi_keep_alive


if __name__ == "__main__":
    sys.exit(main())
