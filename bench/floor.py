"""The floor: a bare grpc.aio server with the bridge's services and no upstream at all.

It answers every call with a prebuilt message (a stream with 100 prebuilt chunks), so
measuring it with the same load client as the bridge shows what gRPC in Python costs on
this machine by itself, and by difference what the bridge adds on top. Prints its port.

With `--relay URL` (the benchmark upstream's /v1), it is the *relay floor*: each call also
makes an upstream HTTP exchange like the bridge's, with aiohttp's client as the bridge uses
it (one session, a pool of the bridge's default 512 connections, the same headers, no
cookie jar, no redirects followed), and reads the whole answer, to its end; a stream yields
one prebuilt chunk per server-sent event that arrives (split on LF LF, as bench/upstream
writes them; nothing parsed). Its request body is a fixed small one (no translation), and
an answer other than 200 fails the call. So it prices gRPC plus
the upstream exchange alone, without any of the bridge's own work (checks, translation,
metadata, metrics, logs): the least a bridge built on these two libraries can cost, in the
same run (`bench/ab.py relay=relay:uvloop`, on the bridge's default event loop). Chat only,
as the floor: it has no embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aigateway.v1 import chat_pb2, chat_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent / "micro"))
from aigateway_json import from_json
from conftest import chunk

CHUNKS = [from_json(chat_pb2.StreamChatCompletionResponse, chunk(i, i == 99)) for i in range(100)]
ANSWER = from_json(
    chat_pb2.CreateChatCompletionResponse,
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1732000000,
        "model": "openai/gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " token" * 50},
                "finish_reason": "stop",
            }
        ],
    },
)


class Chat(chat_pb2_grpc.ChatServiceServicer):
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateChatCompletionResponse:
        return ANSWER

    async def StreamChatCompletion(
        self, request: chat_pb2.StreamChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.StreamChatCompletionResponse]:
        if request.model.startswith("bench-paced-"):
            # As bench/upstream's paced model: RATExCOUNT chunks on a fixed schedule, each
            # stamped with the wall-clock time it was made (bench/capacity.py reads it).
            rate, count = map(int, request.model[len("bench-paced-") :].split("x"))
            loop = asyncio.get_running_loop()
            begin = loop.time()
            for i in range(count):
                delay = begin + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                message = chat_pb2.StreamChatCompletionResponse()
                message.CopyFrom(CHUNKS[1])
                message.id = f"chatcmpl-t{time.time_ns()}"
                yield message
            return
        for message in CHUNKS:
            yield message


class Relay(chat_pb2_grpc.ChatServiceServicer):
    """The relay floor: the upstream exchange, then the prebuilt answers (see the module)."""

    def __init__(self, upstream: str) -> None:
        import aiohttp  # only the relay floor needs it

        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512),  # the bridge's --max-connections
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={
                "authorization": "Bearer bench",
                "content-type": "application/json",
                "user-agent": "aigateway-bridge relay-floor",
                "accept": "application/json",
            },
        )

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateChatCompletionResponse:
        body = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % (
            request.model.encode()
        )
        async with self.session.post(self.url, data=body, allow_redirects=False) as response:
            _expect_ok(response.status)
            await response.read()
        return ANSWER

    async def StreamChatCompletion(
        self, request: chat_pb2.StreamChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.StreamChatCompletionResponse]:
        body = b'{"model":"%s","stream":true,"messages":[{"role":"user","content":"hi"}]}' % (
            request.model.encode()
        )
        events = 0
        paced = request.model.startswith("bench-paced-")
        async with self.session.post(
            self.url, data=body, headers={"accept": "text/event-stream"}, allow_redirects=False
        ) as response:
            _expect_ok(response.status)
            tail = b""
            done = False
            while part := await response.content.readany():
                if done:  # what follows [DONE] is read to the end, as the bridge does
                    continue
                tail += part
                *complete, tail = tail.split(b"\n\n")
                for event in complete:
                    if event.startswith(b"data: [DONE]"):
                        done = True
                        break
                    message = CHUNKS[min(events, 99)]
                    if paced:  # the upstream's id carries the time bench/capacity.py reads
                        start = event.index(b'"id":"') + 6
                        message = chat_pb2.StreamChatCompletionResponse()
                        message.CopyFrom(CHUNKS[1])
                        message.id = event[start : event.index(b'"', start)].decode()
                    yield message
                    events += 1


def _expect_ok(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"the upstream answered {status}: the relay floor measures 200s")


async def serve(relay: str | None) -> None:
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(Relay(relay) if relay else Chat(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"floor listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--relay", metavar="URL", help="the upstream's /v1: the relay floor")
    asyncio.run(serve(parser.parse_args().relay))
