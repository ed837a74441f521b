"""The embeddings endpoint of the development upstream (`POST /v1/embeddings`).

Deterministic: each vector comes from a hash of the model and the input, so a test can compare
what the bridge returns with a direct REST call (`embedding_vector`).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import Any

from dev.upstream.replies import FullReply, Json, encode_json
from dev.upstream.validation import BadRequest, positive_int

__all__ = ["DEFAULT_DIMENSIONS", "embedding_vector", "embeddings"]

DEFAULT_DIMENSIONS = 8


def embeddings(body: Json) -> FullReply:
    """The answer to `POST /v1/embeddings`; raises `BadRequest` for an invalid body."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    inputs = _embedding_inputs(body.get("input"))
    dimensions = positive_int(body, "dimensions", DEFAULT_DIMENSIONS)
    if dimensions > 4096:
        raise BadRequest("'dimensions' must be at most 4096", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(model, item, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(max(1, len(i.split())) if isinstance(i, str) else len(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return FullReply(
        200, encode_json({"object": "list", "data": data, "model": model, "usage": usage})
    )


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    """One entry per embedding: a string, strings, a token list, or token lists."""
    invalid = BadRequest(
        "'input' must be a non-empty string, array of strings, "
        "array of token ids or array of token arrays",
        "input",
    )
    if isinstance(value, str):
        if not value:
            raise invalid
        return [value]
    if not isinstance(value, list) or not value:
        raise invalid
    if all(_is_token(v) for v in value):
        return [value]
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
        return list(value)
    raise invalid


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def embedding_vector(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector determined by model and input; every value is exactly a float32, so the
    float and base64 encodings describe the same numbers."""
    seed = hashlib.sha256(encode_json([model, item])).digest()
    rng = random.Random(int.from_bytes(seed[:16], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))
