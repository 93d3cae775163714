"""meshkit's HPACK decoder against the hpack library's encoder and decoder."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit.server.h2grpc.hpackdec import HeaderDecoder, HeaderListTooLarge, HPACKError

_names = st.sampled_from([b":method", b":path", b":authority", b"content-type", b"grpc-timeout",
                          b"token", b"user-agent", b"te", b"x-custom", b"x-bin"])
_values = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\x00", b"a"))
_field = st.tuples(_names, _values, st.booleans())
_blocks = st.lists(st.lists(_field, min_size=1, max_size=12), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(blocks=_blocks, huffman=st.booleans(), table=st.sampled_from([0, 64, 256, 4096]))
def test_decodes_what_hpack_encodes_like_hpack(blocks: list[list[tuple[bytes, bytes, bool]]],
                                              huffman: bool, table: int) -> None:
    """Blocks from one connection's encoder (indexed, incremental, never-indexed
    fields, Huffman or not, a table-size change) decode as hpack decodes them."""
    enc = Encoder()
    ref = Decoder()
    ours = HeaderDecoder()
    for i, block in enumerate(blocks):
        if i == 1:
            enc.header_table_size = table  # emits a size update in the next block
        fields = [(n, v, sensitive) for n, v, sensitive in block]
        data = enc.encode(fields, huffman=huffman)
        want = [(bytes(n), bytes(v)) for n, v in ref.decode(data, raw=True)]
        assert ours.decode(data) == want
        assert ours._size == ref.header_table._current_size


def test_repeated_grpc_request_block_is_all_indexed() -> None:
    enc = Encoder()
    ours = HeaderDecoder()
    hdrs = [(b":method", b"POST"), (b":path", b"/etcdserverpb.KV/Put"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (b"token", b"abc")]
    assert ours.decode(enc.encode(hdrs)) == hdrs
    second = enc.encode(hdrs)
    assert all(b & 0x80 for b in second)
    assert ours.decode(second) == hdrs


@pytest.mark.parametrize("data", [
    b"\x80",  # index 0
    b"\xbf",  # index 63: beyond the static table, empty dynamic table
    b"\x7f",  # truncated integer
    b"\x40\x05ab",  # truncated string
    b"\x82\x3f\xe1\x1f",  # size update after a field
    b"\x3f\xe2\x1f",  # size update above the settings' 4096
    b"\x40\x81\xff\x00",  # bad Huffman (EOS)
])
def test_malformed_blocks_raise(data: bytes) -> None:
    with pytest.raises(HPACKError):
        HeaderDecoder().decode(data)


def test_header_list_limit() -> None:
    big = Encoder().encode([(b"x-big", b"v" * 2000)] * 40)
    with pytest.raises(HeaderListTooLarge):
        HeaderDecoder(max_header_list=64 * 1024).decode(big)
