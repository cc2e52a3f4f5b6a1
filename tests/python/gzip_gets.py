"""Gets from grpcio clients with default channel options (which accept gzip),
every answer decoded and compared: run by tests/compression.rs.

    gzip_gets.py ADDR NAMESPACE TENANT CLIENTS CALLS_PER_CLIENT

The tenant holds memories m0..m15 whose payload is {"text": "memory {i} " * 40,
"i": i}. Each client is a process of its own with its own channel. Prints one
JSON line: {"right": n, "wrong": {what: count}, "examples": [...]}.
"""

import json
import multiprocessing
import sys

import grpc

from vecmem.v1 import memory_pb2, memory_pb2_grpc

MEMORIES = 16


def expected_text(i):
    return f"memory {i} " * 40


def client(args):
    addr, namespace, tenant, number, calls = args
    stub = memory_pb2_grpc.MemoryServiceStub(grpc.insecure_channel(addr))
    right, wrong, examples = 0, {}, []
    for n in range(calls):
        i = (n * 7 + number) % MEMORIES
        ids = [f"m{i}", f"m{(i + 1) % MEMORIES}", "absent"]
        consistency = memory_pb2.FRESH if n % 3 == 0 else memory_pb2.CACHED
        request = memory_pb2.GetRequest(
            namespace=namespace, tenant=tenant, ids=ids, consistency=consistency
        )
        try:
            answer = stub.Get(request, timeout=30)
            got = {m.id: (m.payload["text"], m.payload["i"]) for m in answer.memories}
            want = {f"m{j}": (expected_text(j), float(j)) for j in (i, (i + 1) % MEMORIES)}
            if got == want and list(answer.missing_ids) == ["absent"]:
                right += 1
                continue
            what = "wrong answer"
            example = f"client {number} call {n}: {answer}"[:300]
        except grpc.RpcError as error:
            what = f"{error.code().name}: {error.details()}"[:120]
            example = f"client {number} call {n}: {what}"
        wrong[what] = wrong.get(what, 0) + 1
        if len(examples) < 3:
            examples.append(example)
    return right, wrong, examples


def main():
    addr, namespace, tenant, clients, calls = sys.argv[1:6]
    jobs = [(addr, namespace, tenant, k, int(calls)) for k in range(int(clients))]
    with multiprocessing.Pool(len(jobs)) as pool:
        results = pool.map(client, jobs)
    report = {"right": 0, "wrong": {}, "examples": []}
    for right, wrong, examples in results:
        report["right"] += right
        for what, count in wrong.items():
            report["wrong"][what] = report["wrong"].get(what, 0) + count
        report["examples"].extend(examples)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
