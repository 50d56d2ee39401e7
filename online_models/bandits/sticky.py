"""Keep a member's artwork for a title stable for a while.

Changing a title's image on every page view makes the title harder to recognize and blurs
attribution (which image led to the play?). :class:`StickyAssignment` decides, from the
previous assignment of a (member, title) and the current time, whether to keep it or let the
policy choose again. It is pure logic: the caller stores the :class:`Assignment` (e.g. next to
the member's state) and passes it back on the next request.

Rules:

- No previous assignment, the period (``period_s``) has elapsed, or the previous image is no
  longer among the candidates: the policy chooses again (a *new decision*, stamped ``now``).
- Within the period the member sees the same image, and the impression is logged with the
  **propensity the original choice had** (and the original policy name and version), not the
  policy's current probability of that image: the image is on screen because of that draw,
  and the policy did not draw again. An offline evaluator should therefore treat the
  impressions of one assignment (same member, title and ``chosen_at_ms``) as one decision
  whose reward window covers the period.
- ``explore_override`` (off by default): within the period the policy still draws; if the
  draw lands on an image that is *not* the policy's greedy choice (not among the arms of
  highest propensity, e.g. the epsilon branch of epsilon-greedy or the floor of LinUCB) and
  differs from the one on screen, that image is shown as a new decision with its own
  propensity (exactly the probability of that draw) and restarts the period. Greedy draws
  never replace the image on screen, so exploration continues during long periods while the
  exploitation choice stays stable. For :class:`~online_models.bandits.uniform.UniformRandom`
  every arm ties for greedy, so it never overrides.

>>> from online_models.bandits.base import Arm
>>> from online_models.bandits.uniform import UniformRandom
>>> sticky = StickyAssignment(period_s=3600)
>>> policy = UniformRandom(seed=2)
>>> arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",))]
>>> first = sticky.assign(policy, {}, arms, previous=None, now_ms=0)
>>> first.is_new, first.assignment.chosen_at_ms
(True, 0)
>>> again = sticky.assign(policy, {}, arms, previous=first.assignment, now_ms=60_000)
>>> again.is_new, again.choice == first.choice
(False, True)
>>> later = sticky.assign(policy, {}, arms, previous=first.assignment, now_ms=3_600_000)
>>> later.is_new, later.assignment.chosen_at_ms
(True, 3600000)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from online_models.bandits.base import TIE_TOLERANCE, Arm, ArtworkPolicy, Choice, Context

__all__ = ["Assignment", "StickyAssignment", "StickyDecision"]


@dataclass(frozen=True)
class Assignment:
    """What a (member, title) was last shown by decision: store it, pass it back."""

    artwork_id: str
    chosen_at_ms: int
    propensity: float
    policy: str = ""
    policy_version: int = 0

    @classmethod
    def from_choice(cls, choice: Choice, now_ms: int) -> Assignment:
        return cls(choice.artwork_id, now_ms, choice.propensity, choice.policy,
                   choice.policy_version)

    def to_choice(self) -> Choice:
        """The original decision, to log again with each impression within the period."""
        return Choice(self.artwork_id, self.propensity, self.policy, self.policy_version)


@dataclass(frozen=True)
class StickyDecision:
    """The image to show now, the assignment to store, and whether it is a new decision."""

    choice: Choice
    assignment: Assignment
    is_new: bool


class StickyAssignment:
    """Keep-or-rechoose logic for a (member, title)'s artwork.

    Parameters
    ----------
    period_s
        How long an image stays (seconds) after it was chosen; 0 re-chooses every time.
    explore_override
        Within the period, let an exploratory (non-greedy) draw of the policy replace the
        image as a new decision.
    """

    def __init__(self, period_s: float, explore_override: bool = False) -> None:
        if period_s < 0:
            raise ValueError("period_s must be >= 0")
        self.period_s = period_s
        self.explore_override = explore_override

    def keep(self, previous: Assignment | None, now_ms: int,
             artwork_ids: Sequence[str]) -> bool:
        """True when ``previous`` is still within its period and still a candidate.

        A ``now_ms`` earlier than ``chosen_at_ms`` (clock skew, replays) counts as within.

        >>> a = Assignment("t1-a", chosen_at_ms=1_000, propensity=0.5)
        >>> s = StickyAssignment(period_s=10)
        >>> s.keep(a, 10_999, ["t1-a", "t1-b"]), s.keep(a, 11_000, ["t1-a", "t1-b"])
        (True, False)
        >>> s.keep(a, 5_000, ["t1-b"])           # the image was withdrawn
        False
        """
        if previous is None or previous.artwork_id not in artwork_ids:
            return False
        return now_ms - previous.chosen_at_ms < self.period_s * 1000.0

    def assign(self, policy: ArtworkPolicy, context: Context, arms: Sequence[Arm],
               previous: Assignment | None, now_ms: int) -> StickyDecision:
        """Keep ``previous`` or let ``policy`` choose; see the module rules."""
        ids = [a.artwork_id for a in arms]
        if not self.keep(previous, now_ms, ids):
            choice = policy.select(context, arms)
            return StickyDecision(choice, Assignment.from_choice(choice, now_ms), True)
        assert previous is not None
        if self.explore_override:
            props = policy.propensities(context, arms)
            choice = policy.draw(props)
            best = max(props.values())
            exploratory = best - props[choice.artwork_id] > TIE_TOLERANCE * best
            if exploratory and choice.artwork_id != previous.artwork_id:
                return StickyDecision(choice, Assignment.from_choice(choice, now_ms), True)
        return StickyDecision(previous.to_choice(), previous, False)
