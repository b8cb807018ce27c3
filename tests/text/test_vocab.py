import pytest

from genserve.text.vocab import CharVocab, OutOfVocabularyError


def test_encode_decode_round_trip() -> None:
    vocab = CharVocab.from_text("hello world")
    assert vocab.decode(vocab.encode("world hello")) == "world hello"
    assert vocab.chars == tuple(sorted(set("hello world")))


def test_unknown_characters_are_named() -> None:
    vocab = CharVocab.from_text("abc")
    with pytest.raises(OutOfVocabularyError) as info:
        vocab.encode("abxcy")
    assert info.value.unknown == ["x", "y"]


def test_json_round_trip() -> None:
    vocab = CharVocab.from_text("xyz\n")
    assert CharVocab.from_json(vocab.to_json()) == vocab
