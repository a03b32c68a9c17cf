"""Evaluation with ir_measures and its spec strings (`nDCG@10`, `R@100`, `RR@10`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures

from lir.errors import LirError
from lir.trec import Qrels, Run

DEFAULT_MEASURES = ("nDCG@10", "R@100", "RR@10")


def parse_measures(names: Sequence[str]) -> list:
    """ir_measures measure objects from spec strings, with a one-line error for a bad one."""
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError):
            raise LirError(f"unknown measure {name!r} (examples: nDCG@10, R@100, RR@10, AP)") from None
    return measures


def evaluate(run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over the queries of `qrels` (queries missing from the run score 0)."""
    if not qrels:
        raise LirError("the qrels are empty")
    parsed = parse_measures(measures)
    judged = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    totals = dict.fromkeys(parsed, 0.0)
    for metric in ir_measures.iter_calc(parsed, qrels, judged):
        totals[metric.measure] += float(metric.value)
    # a judged query the run does not answer counts as 0, as trec_eval -c does
    return {str(m): totals[m] / len(qrels) for m in parsed}


def format_table(results: Mapping[str, float]) -> str:
    """A two-column text table of measure and value."""
    width = max(len(name) for name in results)
    return "\n".join(f"{name:<{width}}  {value:.4f}" for name, value in results.items())
