from common.hours import MS_PER_HOUR, hour_of, hour_start_ms


def test_hour_is_floor_of_milliseconds() -> None:
    assert hour_of(0) == 0
    assert hour_of(MS_PER_HOUR - 1) == 0
    assert hour_of(MS_PER_HOUR) == 1


def test_known_utc_hour() -> None:
    # 2026-12-05T13:59:59.999Z and 14:00:00.000Z: the boundary is UTC, in ms.
    assert hour_of(1_796_479_199_999) == 499_021
    assert hour_of(1_796_479_200_000) == 499_022
    assert hour_start_ms(499_022) == 1_796_479_200_000


def test_seconds_are_not_milliseconds() -> None:
    # A timestamp in seconds lands in 1970, not in the current hour.
    assert hour_of(1_796_479_200) == 499
