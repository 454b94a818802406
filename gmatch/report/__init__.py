"""Analysis report of a finished run (``gmatch report RUN``) and the comparison of two
runs (``gmatch report A --compare B``).

- :mod:`.stats`: the numbers (get_acc curves, intervals, genre overlap), lookups, errors;
- :mod:`.figures`: matplotlib figures, embedded and saved;
- :mod:`.markup`: the HTML pieces and the one style sheet;
- :mod:`.pages`: the report and comparison pages.
"""

from gmatch.report.markup import STYLE
from gmatch.report.pages import make_comparison, make_report
from gmatch.report.stats import ReportError, acc_curve, export_topk, genre_overlap, wilson

__all__ = [
    "make_report",
    "make_comparison",
    "ReportError",
    "acc_curve",
    "genre_overlap",
    "export_topk",
    "wilson",
    "STYLE",
]
