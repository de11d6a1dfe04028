"""An AWS fault proxy for the chaos suite: a threaded HTTP reverse proxy in front of moto that
injects, per service and at configured rates, each protocol's real throttling and server-error
answers, added latency and connection resets, and counts what it forwarded and injected.

Python 3.11 standard library only, so it runs with any interpreter (the chaos suite uses
.tools/venv's).

    python fault_proxy.py --upstream http://127.0.0.1:5000 --port 5001 \
        --throttle 0.3 --error 0.1 [--reset 0.02] [--latency-ms 50] \
        [--service-faults '{"ec2": {"throttle": 0.5}}'] [--seed 7]

The service comes from the SigV4 credential scope (`Credential=<key>/<date>/<region>/<service>/
aws4_request`, in the Authorization header or the presigned `X-Amz-Credential` parameter); the
operation from the protocol (S3 method + path + sub-resource, `X-Amz-Target`, Lambda's REST
paths, or the query protocol's `Action`). Requests of an unknown service are forwarded without
faults, since no error shape for them is known.

Admin endpoint (requests without an Authorization header; `__` is not valid in a bucket name):
- `GET /__faults` -> `{"config": ..., "counts": {service: {operation: {"forwarded": n,
  "throttled": n, "error": n, "reset": n, "reset_after": n}}}, "totals": {...}}`
- `POST /__faults` with JSON: `{"default": {"throttle": 0.3, ...}, "services": {"s3": {...}},
  "reset_counts": true, "record": true}`; keys given replace the current ones (`default` is
  merged key by key).
- `GET /__faults/writes` -> with `record` on (or `--record`), every forwarded write (operation
  not Get/Describe/List/Head) as `{"service", "operation", "method", "path", "status", "body"}`
  (body: the first 64 KiB, as text), oldest first; `reset_counts` clears it too. Tests read it
  to prove which writes reached a resource.

Fault kinds (rates are probabilities per request, drawn in this order):
- `reset`: the request is read and the socket closed with RST, nothing forwarded;
- `throttle`: the protocol's throttling answer (S3 503 SlowDown, DynamoDB 400
  ThrottlingException, Lambda 429 TooManyRequestsException, EC2 503 RequestLimitExceeded,
  RDS/IAM/STS 400 Throttling);
- `error`: the protocol's plain 500 (InternalError / InternalServerError / ServiceException /
  InternalFailure);
- `reset_after`: forwarded to moto, then the socket is reset before the answer (the write
  happened, the client never hears of it). Off by default. (Plain moto ignores EC2 ClientTokens,
  so an SDK retry of RunInstances made a duplicate real EC2 would not; `moto_server.py` restores
  EC2's idempotency.)
- `latency_ms` (+ `jitter_ms`): added before every request of the service.

Ignored writes: `POST /__faults` with `{"ignore": ["s3:PutBucketVersioning", ...]}` (service and
operation as counted) makes the proxy answer those operations with the protocol's plain success
without forwarding them (counted as `ignored`): an AWS that accepts a write and never shows it,
for the update-loop guard's tests. `{"ignore": []}` ends it.

`GET /__faults` also reports `peak_in_flight`: per service, the most requests held in their added
latency at once since the last count reset — with latency set, how many calls a client had
outstanding, e.g. to check a concurrency limit. Only the latency window counts: a client's next
call can arrive a moment before the thread that relayed the previous answer has finished, and
sequential calls must not look concurrent.

Bodies are streamed both ways: `Content-Length` request bodies (including the SDK's
`aws-chunked` content encoding, opaque framing inside a Content-Length body) are relayed piece by
piece, and `Transfer-Encoding: chunked` request bodies chunk by chunk with their framing;
responses keep their length or are re-chunked. Host and every
end-to-end header pass through unchanged, so signatures stay valid.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, urlsplit

ADMIN_PATH = "/__faults"
CHUNK = 64 * 1024
RECORD_BODY = 64 * 1024
RECORD_MAX = 50_000
READ_PREFIXES = ("Get", "Describe", "List", "Head")
FAULT_KINDS = ("reset", "throttle", "error", "reset_after")
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business; Expect is answered here.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")

# --- operations -------------------------------------------------------------------------------

S3_SUBRESOURCES = {
    "tagging": "Tagging",
    "versioning": "Versioning",
    "encryption": "Encryption",
    "publicAccessBlock": "PublicAccessBlock",
    "lifecycle": "LifecycleConfiguration",
    "cors": "Cors",
    "policy": "Policy",
    "policyStatus": "PolicyStatus",
    "acl": "Acl",
    "location": "Location",
    "ownershipControls": "OwnershipControls",
    "notification": "NotificationConfiguration",
    "website": "Website",
    "logging": "Logging",
    "replication": "Replication",
    "object-lock": "ObjectLockConfiguration",
    "accelerate": "AccelerateConfiguration",
    "requestPayment": "RequestPayment",
}
VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}


def s3_operation(method: str, path: str, query: dict[str, list[str]], headers) -> str:
    parts = [p for p in path.split("/") if p]
    verb = VERBS.get(method, method.title())
    if not parts:
        return "ListBuckets" if method == "GET" else f"{verb}Service"
    on_object = len(parts) > 1
    if "uploads" in query:
        return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, f"{verb}MultipartUpload")
    for key, name in S3_SUBRESOURCES.items():
        if key in query:
            if name == "PublicAccessBlock":
                return f"{verb}PublicAccessBlock"
            return f"{verb}{'Object' if on_object else 'Bucket'}{name}"
    if on_object:
        if method == "PUT" and headers.get("x-amz-copy-source"):
            return "CopyObject"
        return f"{verb}Object"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET":
        if "versions" in query:
            return "ListObjectVersions"
        if query.get("list-type") == ["2"]:
            return "ListObjectsV2"
        return "ListObjects"
    return {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(
        method, f"{verb}Bucket"
    )


LAMBDA_ROUTES = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("POST", r"^/[\d-]+/functions/?$", "CreateFunction"),
        ("GET", r"^/[\d-]+/functions/?$", "ListFunctions"),
        ("GET", r"^/[\d-]+/functions/[^/]+/?$", "GetFunction"),
        ("DELETE", r"^/[\d-]+/functions/[^/]+/?$", "DeleteFunction"),
        ("GET", r"^/[\d-]+/functions/[^/]+/configuration/?$", "GetFunctionConfiguration"),
        ("PUT", r"^/[\d-]+/functions/[^/]+/configuration/?$", "UpdateFunctionConfiguration"),
        ("PUT", r"^/[\d-]+/functions/[^/]+/code/?$", "UpdateFunctionCode"),
        ("POST", r"^/[\d-]+/functions/[^/]+/versions/?$", "PublishVersion"),
        ("GET", r"^/[\d-]+/functions/[^/]+/versions/?$", "ListVersionsByFunction"),
        ("PUT", r"^/[\d-]+/functions/[^/]+/concurrency/?$", "PutFunctionConcurrency"),
        ("DELETE", r"^/[\d-]+/functions/[^/]+/concurrency/?$", "DeleteFunctionConcurrency"),
        ("GET", r"^/[\d-]+/functions/[^/]+/concurrency/?$", "GetFunctionConcurrency"),
        ("GET", r"^/[\d-]+/tags/.+$", "ListTags"),
        ("POST", r"^/[\d-]+/tags/.+$", "TagResource"),
        ("DELETE", r"^/[\d-]+/tags/.+$", "UntagResource"),
    ]
]


def lambda_operation(method: str, path: str) -> str:
    for m, pattern, name in LAMBDA_ROUTES:
        if m == method and pattern.match(path):
            return name
    # Unknown route: method and path shape, with names replaced, so counts stay grouped.
    shape = "/".join("{}" if i > 2 else p for i, p in enumerate(path.split("/")))
    return f"{method} {shape}"


def service_of(headers, query: dict[str, list[str]]) -> str | None:
    scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    if scope:
        return scope.group(2).lower()
    cred = query.get("X-Amz-Credential", [""])[0].split("/")
    if len(cred) == 5:
        return cred[3].lower()
    return None


# --- fault answers ----------------------------------------------------------------------------


def _query_error(status: int, xmlns: str, kind: str, code: str, message: str, rid: str):
    body = (
        f'<ErrorResponse xmlns="{xmlns}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return status, {"Content-Type": "text/xml", "x-amzn-RequestId": rid}, body.encode()


def fault_response(service: str, fault: str, rid: str):
    """(status, headers, body) of a throttling (`throttle`) or plain 500 (`error`) answer in
    the wire shape `service` really uses, or None for a service without a known shape."""
    throttle = fault == "throttle"
    if service == "s3":
        code, message, status = (
            ("SlowDown", "Please reduce your request rate.", 503)
            if throttle
            else ("InternalError", "We encountered an internal error. Please try again.", 500)
        )
        host_id = uuid.uuid4().hex
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{rid}</RequestId><HostId>{host_id}</HostId></Error>"
        )
        headers = {
            "Content-Type": "application/xml",
            "x-amz-request-id": rid,
            "x-amz-id-2": host_id,
        }
        return status, headers, body.encode()
    if service == "dynamodb":
        error_type, message, status = (
            ("ThrottlingException", "Rate of requests exceeds the allowed throughput.", 400)
            if throttle
            else ("InternalServerError", "Internal server error", 500)
        )
        body = json.dumps(
            {"__type": f"com.amazonaws.dynamodb.v20120810#{error_type}", "message": message}
        ).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-RequestId": rid,
            "x-amzn-ErrorType": error_type,
            "x-amz-crc32": str(zlib.crc32(body)),
        }
        return status, headers, body
    if service == "lambda":
        if throttle:
            status, error_type = 429, "TooManyRequestsException"
            payload = {
                "Reason": "CallerRateLimitExceeded",
                "Type": "User",
                "message": "Rate exceeded",
            }
        else:
            status, error_type = 500, "ServiceException"
            payload = {"Type": "Service", "message": "An internal service error occurred."}
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": rid,
            "x-amzn-ErrorType": error_type,
        }
        if throttle:
            headers["Retry-After"] = "1"
        return status, headers, json.dumps(payload).encode()
    if service == "ec2":
        code, message, status = (
            ("RequestLimitExceeded", "Request limit exceeded.", 503)
            if throttle
            else ("InternalError", "An internal error has occurred", 500)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
        )
        # The body's RequestID is what EC2 documents; the SDKs read the header.
        return status, {"Content-Type": "text/xml;charset=UTF-8", "x-amzn-RequestId": rid}, body.encode()
    namespaces = {
        "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
        "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
        "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    }
    if service in namespaces:
        if throttle:
            return _query_error(400, namespaces[service], "Sender", "Throttling", "Rate exceeded", rid)
        return _query_error(
            500, namespaces[service], "Receiver", "InternalFailure", "Internal failure", rid
        )
    return None


EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
QUERY_XMLNS = {
    "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}


def accepted_response(service: str, operation: str, rid: str):
    """(status, headers, body) of the plain success of `operation`, with nothing in it: what
    an ignored write is answered with. None for a service without a known shape."""
    if service == "s3":
        return 200, {"x-amz-request-id": rid, "x-amz-id-2": uuid.uuid4().hex}, b""
    if service in ("dynamodb", "lambda"):
        body = b"{}"
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": rid}
        if service == "dynamodb":
            headers["Content-Type"] = "application/x-amz-json-1.0"
            headers["x-amz-crc32"] = str(zlib.crc32(body))
        return 200, headers, body
    if service == "ec2":
        body = (
            f'<{operation}Response xmlns="{EC2_XMLNS}"><requestId>{rid}</requestId>'
            f"<return>true</return></{operation}Response>"
        )
        return 200, {"Content-Type": "text/xml;charset=UTF-8"}, body.encode()
    if service in QUERY_XMLNS:
        body = (
            f'<{operation}Response xmlns="{QUERY_XMLNS[service]}"><{operation}Result/>'
            f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
            f"</{operation}Response>"
        )
        return 200, {"Content-Type": "text/xml", "x-amzn-RequestId": rid}, body.encode()
    return None


# --- state ------------------------------------------------------------------------------------


class State:
    """Configuration and counters, shared by every handler thread."""

    def __init__(self, default: dict, services: dict, seed: int | None):
        self.lock = threading.Lock()
        self.config = {"default": default, "services": services, "ignore": []}
        self.counts: dict[str, dict[str, dict[str, int]]] = {}
        self.rng = random.Random(seed)
        self.record = False
        self.writes: list[dict] = []
        # Requests of each service between arrival and answer, and the most seen at once.
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def enter(self, service: str) -> None:
        with self.lock:
            n = self.in_flight.get(service, 0) + 1
            self.in_flight[service] = n
            self.peak[service] = max(self.peak.get(service, 0), n)

    def leave(self, service: str) -> None:
        with self.lock:
            self.in_flight[service] = self.in_flight.get(service, 1) - 1

    def rules(self, service: str) -> dict:
        with self.lock:
            rules = dict(self.config["default"])
            rules.update(self.config["services"].get(service, {}))
            return rules

    def draw(self, rules: dict) -> tuple[str | None, float]:
        """The fault for one request (None: forward it) and its latency in seconds."""
        with self.lock:
            r = self.rng.random()
            jitter = self.rng.random()
        latency = float(rules.get("latency_ms", 0) or 0)
        latency += float(rules.get("jitter_ms", 0) or 0) * jitter
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += float(rules.get(kind, 0) or 0)
            if r < edge:
                return kind, latency / 1000
        return None, latency / 1000

    def ignored(self, service: str, operation: str) -> bool:
        with self.lock:
            return f"{service}:{operation}" in self.config["ignore"]

    def count(self, service: str, operation: str, what: str) -> None:
        with self.lock:
            ops = self.counts.setdefault(service, {})
            ops.setdefault(operation, {}).setdefault(what, 0)
            ops[operation][what] += 1

    def recording(self, operation: str) -> bool:
        with self.lock:
            return self.record and not operation.startswith(READ_PREFIXES)

    def recorded(self, entry: dict) -> None:
        with self.lock:
            if len(self.writes) < RECORD_MAX:
                self.writes.append(entry)

    def written(self) -> list[dict]:
        with self.lock:
            return list(self.writes)

    def snapshot(self) -> dict:
        with self.lock:
            counts = copy.deepcopy(self.counts)
            config = copy.deepcopy(self.config)
            peak = dict(self.peak)
        totals: dict[str, dict[str, int]] = {}
        for service, ops in counts.items():
            per = totals.setdefault(service, {})
            for numbers in ops.values():
                for what, n in numbers.items():
                    per[what] = per.get(what, 0) + n
        return {"config": config, "counts": counts, "totals": totals, "peak_in_flight": peak}

    def update(self, patch: dict) -> None:
        with self.lock:
            if "default" in patch:
                self.config["default"].update(patch["default"])
            if "services" in patch:
                self.config["services"] = dict(patch["services"])
            if "ignore" in patch:
                self.config["ignore"] = [str(op) for op in patch["ignore"]]
            if patch.get("reset_counts"):
                self.counts = {}
                self.writes = []
                self.peak = dict(self.in_flight)
            if "record" in patch:
                self.record = bool(patch["record"])
            if "seed" in patch:
                self.rng = random.Random(patch["seed"])


# --- the proxy --------------------------------------------------------------------------------


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kaws-fault-proxy"
    state: State
    upstream: tuple[str, int]

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            # The client went away, or a reset fault closed the socket under us.
            self.close_connection = True

    def do_ANY(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path.startswith(ADMIN_PATH) and "Authorization" not in self.headers:
            return self.admin()

        # Query-protocol services (EC2, RDS, IAM, STS) name the operation in a small form
        # body; read it first. Every other body is streamed after the fault decision.
        body = None
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded") and not self.chunked():
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        service = service_of(self.headers, query)
        operation = self.operation(service, url, query, body)
        if service is None:
            return self.forward(body, "unknown", operation)
        if self.state.ignored(service, operation):
            answer = accepted_response(service, operation, str(uuid.uuid4()))
            if answer is not None:
                if body is None:
                    self.drain()
                self.state.count(service, operation, "ignored")
                return self.answer(*answer)

        rules = self.state.rules(service)
        fault, latency = self.state.draw(rules)
        if latency > 0:
            self.state.enter(service)
            try:
                time.sleep(latency)
            finally:
                self.state.leave(service)
        if fault is None:
            return self.forward(body, service, operation)
        if fault == "reset_after":
            self.state.count(service, operation, "reset_after")
            return self.forward(body, service, operation, reset_after=True)
        if body is None:
            self.drain()
        if fault == "reset":
            self.state.count(service, operation, "reset")
            return self.reset()
        answer = fault_response(service, fault, str(uuid.uuid4()))
        if answer is None:
            return self.forward(body, service, operation)
        self.state.count(service, operation, "throttled" if fault == "throttle" else "error")
        self.answer(*answer)

    def answer(self, status: int, headers: dict, payload: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_ANY

    def operation(self, service, url, query, body) -> str:
        if service == "s3":
            return s3_operation(self.command, url.path, query, self.headers)
        target = self.headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        if service == "lambda":
            return lambda_operation(self.command, url.path)
        params = dict(parse_qsl(body.decode("utf-8", "replace"))) if body else {}
        action = params.get("Action") or query.get("Action", [""])[0]
        return action or f"{self.command} {url.path}"

    def chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def body_pieces(self):
        """Yields the request body as it arrives; for a chunked body each piece is one chunk
        with its framing, relayed as is, the last one the terminating chunk and trailers."""
        if self.chunked():
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("client closed the chunked body early")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    trailer = b""
                    while True:
                        line = self.rfile.readline(65537)
                        trailer += line
                        if line in (b"\r\n", b"\n", b""):
                            break
                    yield size_line + trailer
                    return
                yield size_line + self.rfile.read(size) + self.rfile.readline(65537)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise ConnectionError("client closed the request body early")
                left -= len(piece)
                yield piece

    def drain(self) -> None:
        for _ in self.body_pieces():
            pass

    def reset(self) -> None:
        """Closes the client connection with RST and no answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def forward(self, body, service: str, operation: str, reset_after: bool = False) -> None:
        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            # Transfer-Encoding is kept: a chunked body is relayed with its chunk framing.
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    upstream.putheader(k, v)
            upstream.putheader("Connection", "close")
            upstream.endheaders()
            record = self.state.recording(operation)
            seen = bytearray()
            if body is not None:
                upstream.send(body)
                seen += body[:RECORD_BODY]
            else:
                for piece in self.body_pieces():
                    upstream.send(piece)
                    if record and len(seen) < RECORD_BODY:
                        seen += piece[: RECORD_BODY - len(seen)]
            response = upstream.getresponse()
            if record:
                self.state.recorded(
                    {
                        "service": service,
                        "operation": operation,
                        "method": self.command,
                        "path": self.path,
                        "status": response.status,
                        "body": seen.decode("utf-8", "replace"),
                        "time": time.time(),
                    }
                )
            if reset_after:
                response.read()
                return self.reset()
            self.state.count(service, operation, "forwarded")
            self.relay(response)
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            # moto unreachable or broken: answer 502 so the client sees a server error.
            self.state.count(service, operation, "upstream_failed")
            try:
                payload = f"fault proxy: upstream failed: {e}".encode()
                self.send_response(502)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass
            self.close_connection = True
        finally:
            upstream.close()

    def relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        chunked = "chunked" in (response.getheader("Transfer-Encoding") or "").lower()
        for k, v in response.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "transfer-encoding":
                self.send_header(k, v)
        head = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        # A body without a length (chunked, or ended by close) is re-chunked, keeping the
        # client's connection alive.
        rechunk = not head and (chunked or length is None)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        while True:
            piece = response.read1(CHUNK) if rechunk else response.read(CHUNK)
            if not piece:
                break
            if rechunk:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def admin(self) -> None:
        if self.command == "POST":
            raw = b"".join(self.body_pieces())
            try:
                self.state.update(json.loads(raw or b"{}"))
            except (ValueError, TypeError, AttributeError) as e:
                return self.reply(400, {"error": str(e)})
        elif self.command != "GET":
            self.drain()
            return self.reply(405, {"error": "GET or POST"})
        if urlsplit(self.path).path == ADMIN_PATH + "/writes":
            return self.reply(200, {"writes": self.state.written()})
        return self.reply(200, self.state.snapshot())

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a probability in [0, 1]")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="moto's URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--throttle", type=rate, default=0.0)
    p.add_argument("--error", type=rate, default=0.0, help="rate of plain 500s")
    p.add_argument("--reset", type=rate, default=0.0, help="rate of resets before forwarding")
    p.add_argument("--reset-after", type=rate, default=0.0, help="rate of resets after forwarding")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--service-faults", default="{}", help='JSON, e.g. {"ec2": {"throttle": 0.5}}')
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--record", action="store_true", help="record forwarded writes")
    args = p.parse_args(argv)

    upstream = urlsplit(args.upstream)
    default = {
        "throttle": args.throttle,
        "error": args.error,
        "reset": args.reset,
        "reset_after": args.reset_after,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
    }
    Proxy.state = State(default, json.loads(args.service_faults), args.seed)
    Proxy.state.record = args.record
    Proxy.upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
    server = ThreadingHTTPServer((args.host, args.port), Proxy)
    server.daemon_threads = True
    server.request_queue_size = 128
    host, port = server.server_address[:2]
    print(
        f"fault proxy listening on http://{host}:{port} -> {args.upstream} (seed {args.seed})",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
