"""The benchmark registry: every suite names a module and function that exist, and the
report writer heads, prints and writes a table with the ratios it computes."""

import importlib

import pytest

from benchmarks.common import rows_table, write_report
from benchmarks.run import SUITES, Suite, run_suite


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_names_a_function_that_exists(name):
    suite = SUITES[name]
    assert callable(getattr(importlib.import_module(f"benchmarks.{suite.module}"), suite.function))
    assert suite.output.endswith(".md") and "issue" not in suite.title.lower()


def test_rows_table_gives_the_ratio_against_the_reference():
    table = rows_table([{"what": "x/s", "value": 6.0, "reference": 2.0, "note": "n"}])
    assert "| x/s | 6.000 | 2.000 | 3.00 | n |" in table
    nan = rows_table([{"what": "y", "value": 1.0, "reference": float("nan"), "note": ""}])
    assert "| nan |" in nan


def test_run_suite_writes_what_it_prints(tmp_path, capsys, monkeypatch):
    import benchmarks.common as common

    def fake_rows(k):
        return [{"what": "a", "value": k, "reference": 1.0, "note": ""}]

    monkeypatch.setattr(common, "fake_rows", fake_rows, raising=False)
    out = tmp_path / "OUT.md"
    text = run_suite(Suite("common", "fake_rows", "OUT.md", "a title", ""), "cmd", out, (4.0,))
    assert out.read_text() == text and text in capsys.readouterr().out
    assert (
        text.startswith("# gmatch benchmarks: a title") and "| a | 4.000 | 1.000 | 4.00 |" in text
    )
    assert "Command: `cmd`" in text and "commit " in text
    write_report(out, "t", "c", "body\n", 1.0)
    assert out.read_text().endswith("body\n")
