"""A gRPC call written with raw HTTP/2 frames (h2), for metadata no gRPC library would send.

gRPC core on the server accepts metadata values with CR, LF, NUL and 8-bit bytes; the grpc
client libraries refuse to send them. An attacker is not bound by a client library, so the
tests that prove the bridge refuses such values send them the way an attacker would.
"""

from __future__ import annotations

import asyncio
import struct

import h2.config
import h2.connection
import h2.events
from google.protobuf.message import Message


async def unary(
    port: int, method: str, request: Message, metadata: list[tuple[bytes, bytes]]
) -> dict[bytes, bytes]:
    """Call `method` (`/pkg.Service/Method`) on 127.0.0.1:`port` with raw `metadata`.

    Returns the response headers and trailers merged (`grpc-status`, `grpc-message`, ...).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *metadata,
    ]
    conn.send_headers(stream_id, headers)
    payload = request.SerializeToString()
    conn.send_data(stream_id, struct.pack(">BI", 0, len(payload)) + payload, end_stream=True)
    writer.write(conn.data_to_send())
    seen: dict[bytes, bytes] = {}
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                return seen
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    seen.update({bytes(k): bytes(v) for k, v in event.headers})
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return seen
            writer.write(conn.data_to_send())
    finally:
        writer.close()
