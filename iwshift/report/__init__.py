"""The claims report: every results folder -> ``REPORT.md`` with a verdict on each of the paper's claims
(``python -m iwshift.report --results DIR``). Its rooms: reading the results (:mod:`.load`), the claims and their
rules (:mod:`.claims`), the figures (:mod:`.figures`) and the text with its checks (:mod:`.render`); the statistics
are :mod:`iwshift.stats`'. The report holds nothing that is not in the results (no current time, no absolute
paths), so the same results give the same bytes."""

from .claims import RULES, Claim, Row, all_claims, dependence_curves
from .load import Results, load
from .render import check_readme, check_report, make_report, readme_block, write_readme

__all__ = ["Claim", "RULES", "Results", "Row", "all_claims", "check_readme", "check_report", "dependence_curves",
           "load", "make_report", "readme_block", "write_readme"]
