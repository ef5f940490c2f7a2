"""A ``grpc_health_probe``-style check of a runwatch server, for container health checks.

Asks the standard ``grpc.health.v1.Health/Check`` (which needs no token) and
exits 0 when the answer is SERVING, 1 otherwise (NOT_SERVING, unreachable,
timed out). TLS targets (``https://``) use ``--ca-file`` or ``RUNWATCH_CA_FILE``
as the SDK does.

Examples
--------
::

    python -m runwatch.service.healthcheck                      # 127.0.0.1:50051, overall health
    python -m runwatch.service.healthcheck --target https://127.0.0.1:50051 --ca-file /tls/ca.pem
    python -m runwatch.service.healthcheck --service runwatch.v1.IngestService --timeout 2
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(
    target: str, service: str = "", timeout: float = 3.0, ca_file: str | None = None, server_name: str = ""
) -> tuple[bool, str]:
    """``(serving, what was seen)`` for ``service`` ("" = the server as a whole) at ``target``.

    ``server_name``: the name the TLS certificate must carry, when ``target`` is
    an address it was not made for (a probe inside the pod dials 127.0.0.1).
    """
    from runwatch.client.connection import make_channel

    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    try:
        # No token: health checks are open; a token in the environment would only be noise here.
        channel = make_channel(target, token="", ca_file=ca_file, options=options)
    except ValueError as exc:
        return False, str(exc)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    port = os.environ.get("RUNWATCH_PORT", "50051")
    parser.add_argument("--target", default=f"127.0.0.1:{port}", help="host:port or https://host:port")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--ca-file", default=None, help="PEM CA bundle for an https:// target")
    parser.add_argument("--server-name", default="", help="name the server's TLS certificate carries")
    args = parser.parse_args(argv)
    ok, seen = check(args.target, args.service, args.timeout, args.ca_file, args.server_name)
    print(f"{args.target}: {seen}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
