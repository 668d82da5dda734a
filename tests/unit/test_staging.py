"""Batched table writes (streams/staging.py): what a record reads, and what a refused output does."""
import asyncio

import pytest

from streams import staging


def test_a_record_reads_the_latest_staged_state_then_the_table():
    w = staging.Writer("t", {})
    assert w.staged("p") is None
    w.batch.stage("p", b"1", "s1")
    older, w.batch = w.batch, staging.Batch()
    w._flushing.append(older)          # being flushed: still what the next record must see
    assert w.staged("p") == (b"1", "s1")
    w.batch.stage("p", b"2", "s2")
    assert w.staged("p") == (b"2", "s2")


def test_an_output_the_producer_refused_at_once_fails_the_record_before_its_state_is_staged():
    async def go():
        loop = asyncio.get_running_loop()
        ok, bad = loop.create_future(), loop.create_future()
        bad.set_exception(RuntimeError("message too large"))
        b = staging.Batch()
        with pytest.raises(RuntimeError):
            b.outputs([ok, bad])
        assert b.sent == [ok]
        ok.set_result(None)
        await b.delivered()
    asyncio.run(go())


def test_flush_stores_states_after_the_outputs_and_then_acknowledges():
    order = []

    class Stream:
        async def ack(self, event):
            order.append(("ack", event))

    class Table(dict):
        def __setitem__(self, k, v):
            order.append(("store", k))
            super().__setitem__(k, v)

    async def go():
        table = Table()
        w = staging.Writer("t", table, lambda k, d, s: order.append(("stored", k)))
        w._stream = Stream()
        fut = asyncio.get_running_loop().create_future()
        w.batch.outputs([fut])
        w.batch.stage("p", b"1", "s1")
        w.batch.events.append("e1")
        flush = asyncio.ensure_future(w.flush())
        await asyncio.sleep(0.01)
        assert order == [] and w.staged("p") == (b"1", "s1")   # waits for the broker
        fut.set_result(None)
        await flush
        assert table == {"p": b"1"} and w.staged("p") is None
    asyncio.run(go())
    assert order == [("store", "p"), ("stored", "p"), ("ack", "e1")]
