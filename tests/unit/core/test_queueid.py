"""Queue ids (pigeon.core.queueid): pure, unique, sortable, safe as file names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.core.queueid import ENTROPY_BITS, QueueId, is_queue_id, new_queue_id

T = 1_800_000_000.0
WINDOW_BITS = 45  # 9 base32 characters of microseconds


def test_shape() -> None:  # rule 1
    qid = new_queue_id(T, 0)
    assert len(qid) == 16 and is_queue_id(qid)
    assert qid.endswith("0000000")  # the random part
    assert not set(qid) & set("ILOU")


def test_pure_function_of_time_and_entropy() -> None:  # rule 3
    assert new_queue_id(T, 12345) == new_queue_id(T, 12345)
    assert new_queue_id(T, 12345) != new_queue_id(T, 12346)
    assert new_queue_id(T, 1) != new_queue_id(T + 0.000001, 1)  # microsecond resolution
    # only the low ENTROPY_BITS count
    assert new_queue_id(T, 7) == new_queue_id(T, 7 + (1 << ENTROPY_BITS))
    assert new_queue_id(T, (1 << ENTROPY_BITS) - 1).endswith("ZZZZZZZ")


@given(st.floats(min_value=0, max_value=4_000_000_000), st.floats(min_value=0.000001, max_value=1e6),
       st.integers(min_value=0, max_value=(1 << ENTROPY_BITS) - 1),
       st.integers(min_value=0, max_value=(1 << ENTROPY_BITS) - 1))
def test_later_ids_sort_after_earlier_ones_within_the_window(t: float, dt: float, r1: int, r2: int) -> None:
    a, b = new_queue_id(t, r1), new_queue_id(t + dt, r2)
    ma, mb = int(t * 1_000_000), int((t + dt) * 1_000_000)
    if mb > ma and ma >> WINDOW_BITS == mb >> WINDOW_BITS:  # rule 1
        assert a < b
    assert is_queue_id(a) and is_queue_id(b)


def test_the_time_field_wraps_every_2_to_the_45_microseconds() -> None:  # rule 1
    window = (1 << WINDOW_BITS) / 1_000_000  # about 407 days
    assert 406 * 86400 < window < 408 * 86400
    assert new_queue_id(T, 5) == new_queue_id(T + window, 5)


@pytest.mark.parametrize(
    "text",
    [
        "", "0123456789ABCDE", "0123456789ABCDEFG",  # 15 and 17 characters
        "0123456789abcdef",  # lower case is not an id (ids are compared as text)
        "0123456789ABCDEI", "0123456789ABCDEL", "0123456789ABCDEO", "0123456789ABCDEU",
        "../../etc/passwd", "0123456789ABCD/F", "0123456789ABCDE\n", "0123456789ABCDE.",
    ],
)
def test_is_queue_id_refuses_anything_else(text: str) -> None:  # rule 2
    assert not is_queue_id(text)


def test_queue_id_is_a_str() -> None:
    assert isinstance(new_queue_id(T, 1), str) and QueueId("X") == "X"
