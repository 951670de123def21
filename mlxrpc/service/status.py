"""Engine errors → gRPC status with google.rpc details (ErrorInfo, BadRequest)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..engine.errors import EngineError

ERROR_DOMAIN = "mlxrpc.v1"


def to_status(error: EngineError) -> grpc.Status:
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)]
    if error.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(
        status_pb2.Status(
            code=getattr(code_pb2, error.code.value), message=error.message, details=packed
        )
    )


async def abort_with(context: grpc.aio.ServicerContext, error: EngineError) -> None:
    """Ends the call with ``error``'s status (raises, as context.abort does)."""
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
