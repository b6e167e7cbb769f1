"""The gRPC query API with auth on (docs/security.md, "gRPC"), from Python
grpcio with `authorization` metadata. Run by crates/weft/tests/query_grpc_auth.rs
with GRPC_ADDR, STUBS and the credentials in the environment."""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2

sys.path.insert(0, os.environ["STUBS"])
from weftq import query_pb2 as pb  # noqa: E402
from weftq import query_pb2_grpc as pbg  # noqa: E402

chan = grpc.insecure_channel(os.environ["GRPC_ADDR"])
stub = pbg.QueryStub(chan)
passed = 0


def md(cred):
    return None if cred is None else [("authorization", cred)]


def q(aql, cred):
    return stub.Execute(pb.ExecuteRequest(aql=aql), timeout=10, metadata=md(cred)).result


def fails(code, reason, call):
    global passed
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        st = rpc_status.from_call(e)
        assert st is not None, "no google.rpc.Status details"
        infos = []
        for d in st.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                infos.append(info)
        assert infos and infos[0].reason == reason and infos[0].domain == "query.weft", infos
        passed += 1
        return e
    raise AssertionError(f"expected {code}, it succeeded")


def ok():
    global passed
    passed += 1


U = grpc.StatusCode.UNAUTHENTICATED
P = grpc.StatusCode.PERMISSION_DENIED
admin = "Bearer " + os.environ["ADMIN"]
writer = "Bearer " + os.environ["WRITER"]
reader = "Bearer " + os.environ["READER"]

# The admin makes the table.
q("CREATE TABLE t", admin)
q("SET t 'a' = 1", admin)
ok()

# Health stays open without credentials.
h = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
assert h.status == health_pb2.HealthCheckResponse.SERVING
ok()

# Unauthenticated: none, wrong, expired, revoked key, garbage scheme.
fails(U, "unauthenticated", lambda: q("GET t 'a'", None))
fails(U, "unauthenticated", lambda: q("GET t 'a'", "Bearer " + os.environ["WRONG"]))
fails(U, "unauthenticated", lambda: q("GET t 'a'", "Bearer " + os.environ["EXPIRED"]))
fails(U, "unauthenticated", lambda: q("GET t 'a'", "ApiKey " + os.environ["REVOKED_KEY"]))
fails(U, "unauthenticated", lambda: list(stub.Watch(pb.WatchRequest(table="t", key=b"a"), timeout=10)))

# A reader: GET yes, SET no (also inside a BATCH and a Session).
assert q("GET t 'a'", reader).kvs[0].key == b"a"
ok()
fails(P, "permission_denied", lambda: q("SET t 'b' = 2", reader))
fails(P, "permission_denied", lambda: stub.Batch(pb.BatchRequest(aql="BATCH { GET t 'a'; SET t 'b' = 2 }"), timeout=10, metadata=md(reader)))
fails(P, "permission_denied", lambda: q("GET other 'a'", reader))
fails(P, "permission_denied", lambda: list(stub.Stream(pb.StreamRequest(query=pb.ExecuteRequest(aql="RANGE other FROM ''")), timeout=10, metadata=md(reader))))
fails(P, "permission_denied", lambda: list(stub.Watch(pb.WatchRequest(table="other", key=b"a"), timeout=10, metadata=md(reader))))
answers = list(stub.Session(iter([
    pb.SessionRequest(id=1, query=pb.ExecuteRequest(aql="GET t 'a'")),
    pb.SessionRequest(id=2, query=pb.ExecuteRequest(aql="SET t 'b' = 2")),
]), timeout=10, metadata=md(reader)))
assert answers[0].WhichOneof("answer") == "result", answers[0]
assert answers[1].WhichOneof("answer") == "error" and answers[1].error.reason == "permission_denied", answers[1]
ok()
chunks = list(stub.Stream(pb.StreamRequest(query=pb.ExecuteRequest(aql="RANGE t FROM ''")), timeout=10, metadata=md(reader)))
assert sum(len(c.kvs) for c in chunks) == 1, chunks
ok()

# A writer (token and API key): SET yes.
q("SET t 'b' = 2", writer)
q("SET t 'c' = 3", "ApiKey " + os.environ["KEY"])
assert q("GET t 'c'", writer).kvs[0].key == b"c"
ok()

print(f"{passed} passed, 0 failed")
