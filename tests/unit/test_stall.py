"""The stall rule: pending data and no progress for the timeout means stalled; any progress resets the clock."""

from trade_stream.core.fanout import Peer
from trade_stream.core.stats import Stats


class Transport:
    """Just enough of a transport for the progress rule (no socket: the kernel queue reads as empty)."""

    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str):
        return None


def make() -> tuple[Peer, Transport]:
    peer, transport = Peer(), Transport()
    peer._init_peer(transport, "1.2.3.4", 1 << 20, Stats())
    return peer, transport


def test_idle_client_with_nothing_pending_is_never_stalled():
    peer, _ = make()
    assert not any(peer.stalled(t, 1.0) for t in (0.0, 5.0, 50.0))


def test_pending_without_progress_stalls_after_the_timeout():
    peer, transport = make()
    peer.written, transport.buffered = 1000, 600
    assert not peer.stalled(10.0, 1.0)
    assert not peer.stalled(10.9, 1.0)
    assert peer.stalled(11.1, 1.0)


def test_progress_resets_the_clock_and_writes_alone_are_not_progress():
    peer, transport = make()
    peer.written, transport.buffered = 1000, 600
    peer.stalled(10.0, 1.0)
    peer.written, transport.buffered = 2000, 1600  # we wrote more, the peer took nothing
    assert peer.stalled(11.5, 1.0)
    transport.buffered = 1500  # the peer accepted 100 bytes
    assert not peer.stalled(11.6, 1.0)
    assert not peer.stalled(12.5, 1.0)
    assert peer.stalled(12.7, 1.0)


def test_a_client_nothing_was_written_to_since_it_caught_up_is_not_checked_again():
    peer, transport = make()
    peer.written, transport.buffered = 500, 0
    assert not peer.stalled(1.0, 1.0)  # all delivered: the mark catches up with what was written
    transport.buffered = 10**6  # cannot happen without a write; shows the check is skipped
    assert not peer.stalled(5.0, 1.0)
    peer.written += 100  # a write: checked again
    assert not peer.stalled(5.1, 1.0)
    assert peer.stalled(6.2, 1.0)
