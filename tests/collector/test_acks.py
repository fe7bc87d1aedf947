"""The acknowledgement ledger: which received message ids may be acknowledged, and on which connection."""

from __future__ import annotations

import threading

from collector.ingest.acks import AckLedger


def test_ids_are_due_once_their_chunk_is_committed_in_the_order_received() -> None:
    acks = AckLedger()
    acks.add(1, connection=1, mids=[5, 6])
    acks.add(3, connection=1, mids=[7])  # chunk 2 held only QoS 0 messages
    acks.add(4, connection=1, mids=[8, 9])
    assert acks.due(1) == []
    acks.committed(3)
    assert acks.due(1) == [5, 6, 7]
    assert acks.due(1) == []  # each id once
    acks.committed(2)  # a late, older report moves nothing back
    acks.committed(4)
    assert acks.due(1) == [8, 9]


def test_ids_from_an_earlier_connection_are_never_due_on_a_later_one() -> None:
    acks = AckLedger()
    acks.add(1, connection=1, mids=[5, 6])
    acks.add(2, connection=2, mids=[5])  # the broker reused id 5 on the new connection
    acks.committed(2)
    assert acks.due(2) == [5]
    assert acks.wait_sent(0)


def test_wait_sent_returns_when_the_network_thread_took_the_last_due_ids() -> None:
    acks = AckLedger()
    acks.add(1, connection=1, mids=[5])
    acks.add(2, connection=1, mids=[6])  # never committed: a stop does not wait for it
    acks.committed(1)
    assert not acks.wait_sent(0.01)
    taker = threading.Thread(target=acks.due, args=(1,))
    taker.start()
    assert acks.wait_sent(10)
    taker.join()
    assert acks.waiting() == 1
