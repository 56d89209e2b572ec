import pytest

from bridge.outbound.numbers import InvalidNumber, e164_to_int, int_to_e164, normalise, normalise_fast


@pytest.mark.parametrize(
    "raw",
    ["9876543210", "09876543210", "+91 98765 43210", "98765-43210", "919876543210", "0091 9876543210",
     " +91-98765-43210 "],
)
def test_indian_formats_normalise_to_e164(raw: str) -> None:
    assert normalise(raw) == "+919876543210"
    assert normalise_fast(raw) == "+919876543210"


def test_landline_and_foreign_numbers() -> None:
    assert normalise("022 2659 1234") == "+912226591234"
    assert normalise("+1 415 555 2671") == "+14155552671"
    assert normalise("(415) 555-2671", "US") == "+14155552671"


@pytest.mark.parametrize("raw", ["", "   ", "abc", "12345", "+999123", "9" * 41, "98765432"])
def test_malformed_numbers_raise_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidNumber) as info:
        normalise(raw)
    assert str(info.value)
    if len(raw.strip()) >= 8:
        assert raw.strip() not in str(info.value)  # the error never echoes the input


def test_fast_path_falls_back_to_phonenumbers() -> None:
    assert normalise_fast("022 2659 1234") == "+912226591234"
    with pytest.raises(InvalidNumber):
        normalise_fast("not a number")


def test_integer_key_round_trip() -> None:
    assert int_to_e164(e164_to_int("+919876543210")) == "+919876543210"
