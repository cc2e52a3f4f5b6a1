#!/usr/bin/env python3
"""A vecmem client in Python: stubs generated from proto/ with grpcio-tools,
an upsert, a filtered search, and the two errors a caller handles on purpose
(INVALID_ARGUMENT with a BadRequest naming each bad field; RESOURCE_EXHAUSTED
and UNAVAILABLE with a RetryInfo saying when to retry).

    pip install grpcio grpcio-tools grpcio-status
    python3 -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen proto/vecmem/v1/*.proto
    PYTHONPATH=gen python3 examples/python/client.py      # VECMEM_ADDR=host:port, default localhost:50051
"""

import os
import sys
import time

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vecmem.v1 import filter_pb2, memory_pb2, memory_pb2_grpc, namespace_pb2, namespace_pb2_grpc

MAX_ATTEMPTS = 5


def details(error, kind):
    """The error detail of type `kind` (BadRequest, RetryInfo), or None."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


def with_retries(call, request):
    """Calls, and while the server sheds load or its backend is down, waits
    as its RetryInfo asks and tries again."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return call(request, timeout=10)
        except grpc.RpcError as error:
            retryable = error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
            if not retryable or attempt == MAX_ATTEMPTS:
                raise
            info = details(error, error_details_pb2.RetryInfo)
            delay = info.retry_delay.ToTimedelta().total_seconds() if info else 0.1
            print(f"{error.code().name}; retrying in {delay:.3f}s", file=sys.stderr)
            time.sleep(delay)


def memory(id, vector, payload):
    struct = struct_pb2.Struct()
    struct.update(payload)
    return memory_pb2.Memory(id=id, vector=vector, payload=struct)


def main():
    addr = os.environ.get("VECMEM_ADDR", "localhost:50051")
    namespace = os.environ.get("VECMEM_NAMESPACE", "memories")
    with grpc.insecure_channel(addr) as channel:
        memories = memory_pb2_grpc.MemoryServiceStub(channel)
        namespaces = namespace_pb2_grpc.NamespaceServiceStub(channel)
        dim = namespaces.DescribeNamespace(namespace_pb2.DescribeNamespaceRequest(namespace=namespace), timeout=10).dim

        def vector(hot):
            return [1.0 if i == hot else 0.0 for i in range(dim)]

        upsert = memory_pb2.UpsertRequest(
            namespace=namespace,
            tenant="alice",
            memories=[
                memory("pref-1", vector(0), {"kind": "preference", "text": "likes green tea"}),
                memory("todo-1", vector(1), {"kind": "todo", "text": "book flights"}),
            ],
        )
        ids = with_retries(memories.Upsert, upsert).ids
        print("upserted " + ", ".join(ids))

        search = memory_pb2.SearchRequest(
            namespace=namespace,
            tenant="alice",
            vector=vector(0),
            limit=5,
            with_payload=True,
            filter=filter_pb2.Filter(
                must=[filter_pb2.Condition(key="kind", equals=filter_pb2.MatchValue(keyword="todo"))]
            ),
        )
        for hit in with_retries(memories.Search, search).hits:
            print(f"found {hit.memory.id} (score {hit.score:.3f})")

        wrong = memory_pb2.UpsertRequest(namespace=namespace, tenant="alice", memories=[memory("bad-1", [1.0, 0.0, 0.0], {})])
        try:
            memories.Upsert(wrong, timeout=10)
            sys.exit("expected INVALID_ARGUMENT")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            bad = details(error, error_details_pb2.BadRequest)
            for violation in bad.field_violations if bad else []:
                print(f"rejected {violation.field}: {violation.description}")


if __name__ == "__main__":
    main()
