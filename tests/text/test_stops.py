from genserve.text.stops import find_stop, held_back


def test_find_stop_returns_the_earliest_match_in_the_new_text() -> None:
    assert find_stop("hello world", 6, ["wor", "o w"]) == 4
    assert find_stop("hello world", 11, ["xyz"]) is None


def test_find_stop_spans_the_boundary_of_old_and_new_text() -> None:
    # "lo" straddles what was scanned before (up to 4) and the new character.
    assert find_stop("hello", 4, ["lo"]) == 3


def test_held_back_is_the_longest_suffix_that_may_begin_a_stop() -> None:
    assert held_back("the end\nRO", ["\nROMEO:"]) == 3
    assert held_back("abc", ["xyz"]) == 0
    assert held_back("ab", ["abc", "bcd"]) == 2
    # a whole stop sequence is not "held back": it is found by find_stop instead
    assert held_back("abc", ["abc"]) == 0
