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


def test_paired_differences_pair_by_seed(tmp_path):
    """experiments.paired subtracts the reference on the same seed (not the means of
    unpaired runs): a case that beats its reference by exactly 0.01 on every seed gets
    +0.0100 ± 0.0000 although the seeds themselves differ a lot; seeds only one side has
    are left out."""
    import json

    from experiments.paired import main

    def run(case, seed, val, held):
        d = tmp_path / "runs" / f"case={case}-seed={seed}"
        d.mkdir(parents=True)
        rec = {
            "overrides": [f"case={case}", f"seed={seed}"],
            "val_acc": val,
            "metrics": {"heldout": {"acc_dim0": held, "acc_dim1": held + 0.02}},
        }
        (d / "metrics.json").write_text(json.dumps(rec))

    for seed, base in enumerate([0.40, 0.50, 0.45]):
        run("ref", seed, base, base)
        run("better", seed, base + 0.01, base - 0.03)
    run("better", 7, 0.9, 0.9)  # no reference on seed 7
    assert main([str(tmp_path / "runs"), "--ref", "ref", "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "results.md").read_text()
    assert (
        "| better | ref | 3 | — | +0.0100 ± 0.0000 | -0.0300 ± 0.0000 |" in table
    )  # no folds: no Δcv
    assert main([str(tmp_path / "runs"), "--ref", "nope", "--out", str(tmp_path / "o2")]) == 2
