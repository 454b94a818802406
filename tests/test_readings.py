"""Readings quote their tables: every "0.xxx" and "mean ± sd" in the prose of
experiments/README.md appears in one of its tables."""

from pathlib import Path

from experiments.summarize import unquoted_numbers

PAGE = Path(__file__).resolve().parents[1] / "experiments" / "README.md"


def test_readings_quote_their_tables():
    assert unquoted_numbers(PAGE.read_text()) == []


def test_the_check_catches_a_number_from_memory():
    page = "| a | b |\n|---|---|\n| 0.434 ± 0.006 | 0.7090 |\n\nHeld-out is 0.434 ± 0.006, official 0.709.\n"
    assert unquoted_numbers(page) == []
    assert unquoted_numbers(page + "It was 0.418 before.\n") == ["0.418"]
    assert unquoted_numbers(page + "It was 0.434 ± 0.008.\n") == ["0.434 ± 0.008"]
