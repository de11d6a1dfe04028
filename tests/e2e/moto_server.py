"""Starts moto's server (same arguments as `moto_server`) with fixes for moto bugs that make it
answer differently from real AWS on the wire. Each fix names the bug; remove it once moto
ships a fix. The fixes only touch response serialisation, never moto's behaviour.
"""

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

if __name__ == "__main__":
    sys.exit(main())
