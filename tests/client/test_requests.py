"""Values protobuf cannot hold are refused before sending, naming the field, like the service's own checks."""

from __future__ import annotations

import pytest

from genserve.client import InvalidArgument
from genserve.client.requests import GenerateOptions, generate_request


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"seed": -1}, "seed"),  # uint64
        ({"max_tokens": 2**40}, "max_tokens"),  # int32
        ({"n": "three"}, "n"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": [1]}, "stop"),
    ],
)
def test_a_value_protobuf_cannot_hold_is_invalid_argument_naming_the_field(
    options: GenerateOptions, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        generate_request("ROMEO:", options)
    assert refused.value.message.startswith(f"{field} cannot be ")


def test_values_in_range_are_sent_as_given() -> None:
    request = generate_request("ROMEO:", {"seed": 2**64 - 1, "temperature": 0.0, "stop": ["\n"], "n": 2})
    assert request.seed == 2**64 - 1 and request.sampling.HasField("temperature") and list(request.stop) == ["\n"]
