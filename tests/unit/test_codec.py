import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

import workhorse as wh
from workhorse import codec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip(value):
    assert codec.decode(codec.encode(value)) == value


def test_non_serializable_value_names_the_offending_key():
    sock = socket.socket()
    try:
        with pytest.raises(wh.SerializationError) as info:
            codec.encode({"user": {"name": "a", "conn": sock}}, what="args")
    finally:
        sock.close()
    assert info.value.path == "args['user']['conn']"
    assert "socket" in str(info.value)


def test_list_positions_and_non_string_keys_are_named():
    with pytest.raises(wh.SerializationError, match=r"args\['items'\]\[1\]"):
        codec.encode({"items": [1, {2, 3}]}, what="args")
    with pytest.raises(wh.SerializationError, match=r"\(key\)"):
        codec.encode({1: "a"}, what="args")


def test_big_integers_round_trip_exactly():
    assert codec.decode(codec.encode({"n": 2**70})) == {"n": 2**70}
