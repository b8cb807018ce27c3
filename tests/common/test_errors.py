import pytest

from genserve.common.errors import InvalidArgument, require_choice, require_range


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (-1.0, {}, "x must be in [0, 1], got -1"),
        (1.5, {}, "x must be in [0, 1], got 1.5"),
        (0.0, {"low_open": True}, "x must be in (0, 1], got 0"),
        (1.0, {"high_open": True}, "x must be in [0, 1), got 1"),
        (float("nan"), {}, "x must be a finite number, got nan"),
        (float("inf"), {}, "x must be a finite number, got inf"),
    ],
)
def test_range_messages_name_the_field_and_the_interval(value: float, kwargs: dict[str, bool], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        require_range("x", value, 0.0, 1.0, **kwargs)
    assert info.value.message == message


def test_values_inside_pass() -> None:
    assert require_range("x", 0.5, 0.0, 1.0) == 0.5
    assert require_range("x", 1.0, 0.0, 1.0, low_open=True) == 1.0


def test_choice_lists_the_options() -> None:
    with pytest.raises(InvalidArgument, match="layer 'x' is not one of: a, b"):
        require_choice("layer", "x", ["b", "a"])
