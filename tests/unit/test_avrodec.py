"""topics/avrodec.py's compiled decoders against fastavro, on every topic's schema: the same
values for valid bodies, an exception for every corrupted one (truncated, bit-flipped)."""
import io
import random

import fastavro
import pytest

from tests import sinks_fixtures as F
from topics import registry as T
from topics import schemas
from topics.avrodec import compile_decoder
from topics.serde import serde


def _fastavro(schema, body: bytes):
    buf = io.BytesIO(body)
    rec = fastavro.schemaless_reader(buf, schema, None)
    return rec, buf.tell()


def _samples() -> list[tuple[str, dict]]:
    out = [(topic, v) for topic, pairs in F.sample_records("avrodec").items() for _, v in pairs]
    p = F.plan("p-big", "g", tasks=[F.task(f"t{i}", i, 1, deps=[f"t{i - 1}"] if i else []) for i in range(30)], risks=[])
    out += [(T.PLANS_CREATED.name, p),
            (T.EXECUTION_FEEDBACK.name, F.feedback("p", "t\u00e9\u4e2d", "FAILED", None, message="\u00fcnicode " * 40)),
            (T.RESOURCES_AVAILABILITY.name, F.resource("r", {f"k{i}": float(i) for i in range(200)}))]
    return out


@pytest.mark.parametrize("topic,value", _samples())
def test_compiled_decoder_matches_fastavro(topic, value):
    s = serde(topic)
    dec = compile_decoder(s.schema)
    assert dec is not None, f"{topic}: schema not covered"
    body = s.encode(value)[5:]
    got, end = dec(body, 0)
    want, want_end = _fastavro(s.schema, body)
    assert got == want and end == want_end == len(body)
    assert list(got) == list(want)   # field order too
    assert s.decode(s.encode(value)) == want


@pytest.mark.parametrize("topic,value", _samples())
def test_compiled_decoder_refuses_what_fastavro_refuses(topic, value):
    s = serde(topic)
    dec = compile_decoder(s.schema)
    body = s.encode(value)[5:]
    rng = random.Random(7)
    cases = [body[:k] for k in range(len(body))]
    for _ in range(300):
        b = bytearray(body)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    for case in cases:
        try:
            want = _fastavro(s.schema, case)
        except Exception:  # noqa: BLE001
            want = None
        try:
            got = dec(case, 0)
        except Exception:  # noqa: BLE001
            got = None
        if want is None:
            assert got is None, f"{topic}: decoded what fastavro refuses: {case!r}"
        elif got is not None:
            assert got == want
        # (a body fastavro reads but we refuse would be a lost record: there is none in these cases)
        assert not (want is not None and got is None), f"{topic}: refused what fastavro reads: {case!r}"


def test_every_current_schema_compiles():
    for t in T.TOPICS:
        try:
            s = serde(t.name)
        except KeyError:
            continue
        assert compile_decoder(s.schema) is not None, t.name
