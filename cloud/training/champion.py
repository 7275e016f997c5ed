"""The champion gate: does a new model version beat the current champion on the same data?

Both versions are measured by :func:`cloud.training.evaluate.evaluate` on the same held-out
windows and the same labelled events. The challenger *beats* the champion when, within the
:class:`~cloud.training.config.GatePolicy` tolerances, it is no worse on any measure:

1. false alarms: its anomaly rate on held-out normal windows is at most the champion's plus
   ``far_tolerance``;
2. detection: where operators confirmed failures, it detects at least the champion's share
   minus ``recall_tolerance``;
3. known false positives: where operators marked alerts false, it flags at most the
   champion's share plus ``false_positive_tolerance``.

A profile's first version has nothing to beat and is promoted; so is a version whose champion
cannot be measured any more (its bundle is unreadable or its features cannot be computed), as
the reason says: keeping a model nobody can evaluate is not a decision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cloud.training.config import GatePolicy
from cloud.training.evaluate import Evaluation

Outcome = Literal["promoted", "rejected"]


class GateDecision(BaseModel):
    """The comparison, the outcome and why: what MLflow and the audit log record."""

    outcome: Outcome
    reason: str
    challenger_version: str = Field(description="registry version of the new model")
    champion_version: str | None = Field(description="champion before the decision, if any")
    challenger: Evaluation
    champion: Evaluation | None = Field(description="the champion measured on the same data")
    policy: GatePolicy

    @property
    def promoted(self) -> bool:
        """True when the challenger became champion."""
        return self.outcome == "promoted"


def decide(challenger: Evaluation, champion: Evaluation | None, *, challenger_version: str,
           champion_version: str | None, policy: GatePolicy,
           champion_error: str | None = None) -> GateDecision:
    """Compare both evaluations under ``policy``; the reason names every measure compared."""

    def result(outcome: Outcome, reason: str) -> GateDecision:
        return GateDecision(outcome=outcome, reason=reason, challenger_version=challenger_version,
                            champion_version=champion_version, challenger=challenger,
                            champion=champion, policy=policy)

    if champion_version is None:
        return result("promoted", "first version of this model: no champion to beat")
    if champion is None:
        return result("promoted", f"champion v{champion_version} cannot be evaluated on this "
                                  f"data ({champion_error or 'unknown error'}); replaced")
    failures: list[str] = []
    passes: list[str] = []
    far_new, far_old = challenger.heldout_anomaly_rate, champion.heldout_anomaly_rate
    text = (f"held-out false-alarm rate {far_new:.4f} vs champion {far_old:.4f} "
            f"(tolerance {policy.far_tolerance:g})")
    (failures if far_new > far_old + policy.far_tolerance else passes).append(text)
    if challenger.recall is not None and champion.recall is not None:
        text = (f"confirmed failures detected {challenger.failures_detected}/"
                f"{challenger.failures} vs champion {champion.failures_detected}/"
                f"{champion.failures} (tolerance {policy.recall_tolerance:g})")
        worse = challenger.recall < champion.recall - policy.recall_tolerance
        (failures if worse else passes).append(text)
    if challenger.false_positive_rate is not None and champion.false_positive_rate is not None:
        text = (f"labelled false positives still flagged {challenger.false_positives_flagged}/"
                f"{challenger.false_positives} vs champion {champion.false_positives_flagged}/"
                f"{champion.false_positives} (tolerance {policy.false_positive_tolerance:g})")
        worse = (challenger.false_positive_rate
                 > champion.false_positive_rate + policy.false_positive_tolerance)
        (failures if worse else passes).append(text)
    if failures:
        return result("rejected", f"worse than champion v{champion_version}: "
                                  + "; ".join(failures))
    return result("promoted", f"no worse than champion v{champion_version} on any measure: "
                              + "; ".join(passes))
