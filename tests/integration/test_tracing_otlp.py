"""Spans leave over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set: a real gRPC OTLP trace
receiver (the collector's protocol, opentelemetry-proto's service) on a loopback port gets the
span of a record's trace, with its trace id and service name, from a separate process."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.kafka_helpers import free_port

REPO = Path(__file__).resolve().parents[2]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []
        self.got = threading.Event()

    def Export(self, request, context):   # noqa: N802 - the protocol's name
        self.requests.append(request)
        self.got.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_receiver_with_the_records_trace_id():
    port = free_port()
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        code = "from topics import tracing; print(tracing.outgoing(None, 'test.goal')[1])"
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                                  "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": "chimera-test"})
        assert run.returncode == 0, run.stderr
        trace_id = run.stdout.strip()
        assert receiver.got.wait(30), "no export reached the receiver"
    finally:
        server.stop(0)
    spans = [(rs, s) for req in receiver.requests for rs in req.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for _, s in spans] == ["test.goal"]
    rs, span = spans[0]
    assert span.trace_id.hex() == trace_id
    assert {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"] == "chimera-test"
