"""The per-window meta-controller: the greedy heuristic or QAOA, chosen from recent errors.

The seed suggests an LSTM over recent prediction/scheduling errors. A plan
has only ``qaoa_windows`` windows (3 by default, at most 32): far too short a
sequence to train an LSTM on, and every choice must be explained in the plan.
So the controller is a simpler online learner over the same signal:

* the greedy answer's error on this window is known before choosing (the
  exact optimum is computed for every window anyway), as
  ``gap = (greedy - exact) / (worst - exact)``;
* QAOA's error is learnt from the windows where it ran, as an exponentially
  weighted mean of ``1 - ratio`` (optimistic prior 0, so it is tried first).

It picks QAOA only when its expected gap is below the greedy gap on this
window (a greedy answer that is already optimal leaves nothing to gain) and
records the figures behind every choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WindowController"]


@dataclass
class WindowController:
    """Online chooser between ``"heuristic"`` (greedy flips) and ``"qaoa"``.

    Parameters
    ----------
    decay : float
        Weight of the newest QAOA error in the running mean (0..1].

    >>> c = WindowController()
    >>> c.choose(0.0)[0], c.choose(0.2)[0]
    ('heuristic', 'qaoa')
    >>> c.observe_qaoa(0.5); c.choose(0.2)[0]
    'heuristic'
    """

    decay: float = 0.5
    expected_qaoa_gap: float = 0.0
    qaoa_runs: int = 0
    history: list[dict[str, float | str]] = field(default_factory=list)

    def choose(self, greedy_gap: float) -> tuple[str, str]:
        """``(method, why)`` for a window whose greedy answer is ``greedy_gap`` from the optimum."""
        if greedy_gap <= 1e-12:
            return "heuristic", "the greedy answer is already optimal on this window"
        prior = "no QAOA run yet: optimistic prior 0" if self.qaoa_runs == 0 else f"mean of {self.qaoa_runs} QAOA runs"
        if self.expected_qaoa_gap < greedy_gap:
            return "qaoa", f"expected QAOA gap {self.expected_qaoa_gap:.3f} ({prior}) < greedy gap {greedy_gap:.3f}"
        return "heuristic", f"expected QAOA gap {self.expected_qaoa_gap:.3f} ({prior}) >= greedy gap {greedy_gap:.3f}"

    def observe_qaoa(self, gap: float) -> None:
        """Learn from a window where QAOA ran: its ``1 - ratio``."""
        if self.qaoa_runs == 0:
            self.expected_qaoa_gap = gap
        else:
            self.expected_qaoa_gap = (1 - self.decay) * self.expected_qaoa_gap + self.decay * gap
        self.qaoa_runs += 1
