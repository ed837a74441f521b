"""Arrays of doubles (embedding vectors) read as packed bytes give exactly what reading them
number by number gives.

`aigateway_json.reading` packs a JSON array of numbers for a `repeated double` field with
`struct` and merges the bytes into the message, instead of checking each element's type and
extending the field element by element. Each case here is translated twice, once that way
and once with the packing switched off (the element-by-element reader, the reference), and
both must give the same deterministic wire bytes, or the same error; the last tests do the
same through a real bridge, its upstream answering odd vectors.
"""

from __future__ import annotations

import decimal
import enum
import fractions
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aigateway.v1 import embeddings_pb2
from aigateway_json import TranslationError, from_json, reading, to_json
from hypothesis import given, settings
from hypothesis import strategies as st

from dev.upstream.faults import Status
from tests.fidelity.harness import ThreadedBridge

ANSWER = embeddings_pb2.CreateEmbeddingsResponse


def _answer(vector: Any) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "m",
    }


class _Counting:
    """`_packed_doubles` as it is, counting the arrays it packed (not None)."""

    def __init__(self) -> None:
        self.packed = 0
        self.real = reading._packed_doubles

    def __call__(self, values: list[Any]) -> bytes | None:
        out = self.real(values)
        self.packed += out is not None
        return out


@pytest.fixture
def packing(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counting]:
    counting = _Counting()
    monkeypatch.setattr(reading, "_packed_doubles", counting)
    yield counting


def _translate(data: dict[str, Any]) -> bytes | str:
    try:
        return from_json(ANSWER, data).SerializeToString(deterministic=True)
    except TranslationError as exc:
        return f"TranslationError: {exc}"


def _both(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    packed = _translate(data)
    with monkeypatch.context() as m:
        m.setattr(reading, "_packed_doubles", lambda values: None)
        reference = _translate(data)
    return packed, reference


TINY = 5e-324  # 01 00 .. 00: with 0.5 (00 .. 00 e0 3f) after it, 13 zero bytes in a row
CASES: dict[str, list[Any]] = {
    "floats": [0.0023064255, -0.0191, 0.5, 1e-7, -3.25e10],
    "integers": [1, 2, -3, 0],
    "integers and floats": [1, 0.5, -3, 2.0],
    "exact zero and one": [0.0, 1.0, 0.25],
    "negative zero": [-0.0, 0.5],
    "extremes": [TINY, 1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308],
    "zero bytes across two numbers": [TINY, 0.5],
    "integers beyond 2**53": [2**53 + 1, 2**63, 2**70, -(2**64)],
    "a true": [0.5, True],
    "a false": [False],
    "a true next to 1.0": [True, 1.0],
    "a string": [0.5, "0.5"],
    "a null": [0.5, None],
    "an array": [0.5, [0.5]],
    "an object": [{"x": 1}],
    "an integer beyond a double": [0.5, 2**1100],
    "one number": [0.125],
}


@pytest.mark.parametrize("name", list(CASES))
def test_packed_and_element_by_element_agree(
    name: str, packing: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed, reference = _both(_answer(CASES[name]), monkeypatch)
    assert packed == reference


def test_plain_vectors_are_packed_and_awkward_ones_are_not(
    packing: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("floats", "integers and floats", "exact zero and one", "extremes"):
        before = packing.packed
        _translate(_answer(CASES[name]))
        assert packing.packed == before + 1, name
    for name in ("a true", "a false", "a true next to 1.0", "a string", "a null", "an array"):
        before = packing.packed
        _translate(_answer(CASES[name]))
        assert packing.packed == before, name


def test_a_vector_with_a_boolean_stays_json_in_extra_fields() -> None:
    message = from_json(ANSWER, _answer([0.5, True]))
    assert not message.data[0].HasField("embedding_float")
    assert to_json(message)["data"][0]["embedding"] == [0.5, True]


def test_a_packed_vector_reads_back_as_its_numbers() -> None:
    vector = [0.0023064255, -0.0, 1, TINY, 2**70]
    message = from_json(ANSWER, _answer(vector))
    values = list(message.data[0].embedding_float.values)
    assert values == [float(v) for v in vector]
    assert math.copysign(1.0, values[1]) == -1.0
    assert struct.pack("<5d", *values) == struct.pack("<5d", *map(float, vector))


_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0.0, 1.0, -0.0, 0, 1, TINY]),
)
_ANY = st.one_of(_NUMBER, st.booleans(), st.none(), st.text(max_size=3))


@settings(max_examples=200, deadline=None)
@given(vector=st.lists(_NUMBER, min_size=1, max_size=40))
def test_generated_vectors_agree(vector: list[Any]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        packed, reference = _both(_answer(vector), monkeypatch)
    assert packed == reference


@settings(max_examples=200, deadline=None)
@given(
    vector=st.lists(_NUMBER, min_size=1, max_size=20),
    odd=_ANY,
    at=st.integers(min_value=0, max_value=20),
)
def test_generated_vectors_with_an_odd_element_agree(vector: list[Any], odd: Any, at: int) -> None:
    vector.insert(min(at, len(vector)), odd)
    with pytest.MonkeyPatch.context() as monkeypatch:
        packed, reference = _both(_answer(vector), monkeypatch)
    assert packed == reference


class _Float(float):
    pass


class _Colour(enum.IntEnum):
    RED = 3


class _BoolLike:
    """A number that is 1 as an index and as a float, but not an int (as numpy.bool_)."""

    def __index__(self) -> int:
        return 1

    def __float__(self) -> float:
        return 1.0


_OTHER_NUMBERS = [
    decimal.Decimal("0.5"),
    decimal.Decimal("0.1000000000000000000001"),
    fractions.Fraction(1, 3),
    _Float(0.25),
    _Colour.RED,
    _BoolLike(),
]


@pytest.mark.parametrize("number", _OTHER_NUMBERS, ids=repr)
@pytest.mark.parametrize("around", [[0.5], [0.5, 1.0], [0.0, 5e-324]], ids=str)
def test_numbers_of_other_types_are_never_packed(
    number: Any, around: list[float], packing: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a JSON decoder with `parse_float=Decimal`, or a numpy vector, gives: the
    element-by-element reader decides, whatever the other numbers are."""
    packed, reference = _both(_answer([*around, number]), monkeypatch)
    assert packed == reference
    assert packing.packed == 0


def test_a_decimal_decoder_gives_what_it_gave_before(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads(
        '{"data":[{"index":0,"embedding":[0.5,0.25]},{"index":1,"embedding":[0.5,1.0]}]}',
        parse_float=decimal.Decimal,
    )
    packed, reference = _both(data, monkeypatch)
    assert packed == reference


def test_a_very_long_array_is_read_element_by_element(
    packing: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = [0.25] * (reading._MAX_PACKED + 1)
    packed, reference = _both(_answer(vector), monkeypatch)
    assert packed == reference
    assert packing.packed == 0
    _translate(_answer(vector[: reading._MAX_PACKED]))
    assert packing.packed == 1


# ------------------------------------------------------------------- through a real bridge

MODEL = "doubles/embeddings"
ODD_BODIES = {
    "bools": ["[0.5,true]", "[false]", "[true,1.0]", "[1.0,0.0,true]"],
    "exact ones and zeros": ["[1.0,0.0,0.5]", "[1,0,-0.0]"],
    "big integers": ["[9007199254740993,9223372036854775808,18446744073709551616]"],
    "an integer beyond a double": ["[0.5," + "1" + "0" * 400 + "]"],
    "a float beyond a double": ["[0.5,1e400]"],
    "NaN and Infinity": ["[NaN,0.5]", "[Infinity,-Infinity]"],
    "denormals": ["[5e-324,2.2250738585072014e-308,-5e-324]"],
    "nested": ["[[0.5],[1.0]]", "[0.5,[0.5]]"],
    "mixed": ['[0.5,"0.5",null,{}]'],
    "empty": ["[]"],
    "long": ["[" + ",".join(["0.125"] * 60_000) + "]"],
    "vectors of each kind": ["[0.5,0.25]", "[0.5,true]", "[1,2,3]", '"AAAAAAAA4D8="'],
}
PACKED = {"exact ones and zeros", "denormals", "long"}
"""Bodies whose every vector takes the packed path."""


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadedBridge]:
    with ThreadedBridge() as running:
        yield running


def _embeddings_body(vectors: list[str]) -> str:
    data = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":{v}}}' for i, v in enumerate(vectors)
    )
    usage = '"usage":{"prompt_tokens":1,"total_tokens":1}'
    return f'{{"object":"list","data":[{data}],"model":"m",{usage}}}'


def _call(live: ThreadedBridge) -> object:
    request = embeddings_pb2.CreateEmbeddingsRequest(model=MODEL, input_text="hi")
    try:
        response = live.embeddings.CreateEmbeddings(request, timeout=30)
    except grpc.RpcError as err:
        return (err.code(), err.details())
    return response.SerializeToString(deterministic=True), json.dumps(to_json(response))


@pytest.mark.parametrize("name", list(ODD_BODIES))
def test_odd_vectors_through_the_bridge_agree(
    name: str, live: ThreadedBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _embeddings_body(ODD_BODIES[name])
    with monkeypatch.context() as m:
        counting = _Counting()
        m.setattr(reading, "_packed_doubles", counting)
        live.program(MODEL, Status(200, body))
        packed = _call(live)
    with monkeypatch.context() as m:
        m.setattr(reading, "_packed_doubles", lambda values: None)
        live.program(MODEL, Status(200, body))
        reference = _call(live)
    assert packed == reference
    if name in PACKED:
        assert counting.packed == len(ODD_BODIES[name])
