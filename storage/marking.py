"""The marking rules, in one place: which responses a session double-marks, the phase a mark is in, who is awaited,
what a marker may see, and which mark is final. Plain functions of one grade's marks, so the work queue, the review
view, add_override and the agreement tables all apply the same rules.

A response is graded once (every upload is a new response), so its grade is the unit of marking: marks attach to it.
In each phase the newest mark is in force (marks are append-only: a correction is a new row).

- first: any marker gives it; a response with no first mark awaits one from everybody.
- second: a response of a session whose double-marking sample (`sampled`) takes it awaits a second mark from anyone
  but its first marker(s).
- adjudication: first and second marks further apart than the threshold (more than, not equal to: on
  speechocean762 marks one point apart agree) await an adjudicator or admin who gave neither.
- final: the adjudicator's mark; else two marks within the threshold: their mean (the better estimate; it may fall
  between two classes); else the one mark there is (provisional while a second mark or adjudication is awaited).
"""

import hashlib
from dataclasses import dataclass
from typing import Any

STAFF = ("adjudicator", "admin")  # roles that adjudicate; admins may do all an adjudicator does
EPSILON = 1e-9  # marks are floats: 6.0 and 7.0 are one step apart, not 1.0000000001


def sampled(session_id: int, response_id: int, share: float) -> bool:
    """Whether a session's double-marking share takes this response: a hash of the two ids, so every app instance
    (and every later look) agrees, without storing the sample; over many responses the share taken is `share`."""
    digest = hashlib.sha256(f"session {session_id} response {response_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def default_threshold(scale_name: str) -> float:
    """One class step of the grade's scale (grader.scale): 1 point on speechocean762, 0.5 (half a band) on the S&I
    scale; 0 on a scale this app does not know, so that any difference goes to adjudication."""
    from grader.scale import SCALES  # here, not above: storing a mark needs no torch (grader imports it)

    scale = SCALES.get(scale_name)
    return scale.step if scale else 0.0


@dataclass(frozen=True)
class Marking:
    """One grade's marks (dicts with examiner, phase, final_score, created_at, id; oldest first), whether its session
    double-marks it, and its session's adjudication threshold (None: default_threshold of the grade's scale)."""

    marks: list[dict[str, Any]]
    double: bool = False
    threshold: float | None = None
    scale_name: str = ""

    @property
    def tolerance(self) -> float:
        """The largest difference between first and second marks that needs no adjudication."""
        return default_threshold(self.scale_name) if self.threshold is None else self.threshold

    def in_force(self, phase: str) -> dict[str, Any] | None:
        """The newest mark of a phase."""
        return next((m for m in reversed(self.marks) if m["phase"] == phase), None)

    def markers(self, *phases: str) -> set[str]:
        return {m["examiner"] for m in self.marks if m["phase"] in phases}

    @property
    def disagree(self) -> bool:
        """First and second marks further apart than the threshold."""
        first, second = self.in_force("first"), self.in_force("second")
        return bool(first and second and abs(first["final_score"] - second["final_score"]) > self.tolerance + EPSILON)

    def final(self) -> dict[str, Any]:
        """{"score": the mark in force or None, "status": unmarked | marked | awaiting second mark | agreed |
        awaiting adjudication | adjudicated, "marks": the ids of the marks the score rests on}."""
        first, second, adjudication = (self.in_force(p) for p in ("first", "second", "adjudication"))
        if adjudication:
            return {"score": adjudication["final_score"], "status": "adjudicated", "marks": [adjudication["id"]]}
        if first and second:
            if self.disagree:
                return {"score": None, "status": "awaiting adjudication", "marks": []}
            return {"score": (first["final_score"] + second["final_score"]) / 2, "status": "agreed",
                    "marks": [first["id"], second["id"]]}
        mark = first or second
        if mark is None:
            return {"score": None, "status": "unmarked", "marks": []}
        awaiting = self.double and second is None
        return {"score": mark["final_score"], "status": "awaiting second mark" if awaiting else "marked",
                "marks": [mark["id"]]}

    def awaited(self, examiner: str, role: str) -> str | None:
        """The phase in which this response awaits this examiner's mark (their work queue), or None."""
        if any(m["examiner"] == examiner for m in self.marks):
            return None
        if self.in_force("first") is None:
            return "first"
        if self.double and self.in_force("second") is None:
            return "second"
        if role in STAFF and self.disagree and self.in_force("adjudication") is None:
            return "adjudication"
        return None

    def phase_for(self, examiner: str, role: str) -> str:
        """The phase a mark by this examiner would be in now: a correction stays in the phase of their last mark;
        else the phase awaited from them; else an adjudicator or admin marking a response others have marked
        adjudicates it (their mark becomes final); else, on a double-marked response, one more second mark (two
        second markers saving at once both stay second marks, the newest in force, never displacing the first
        mark); else one more first mark (the newest is in force, as for any single-marked response)."""
        own = next((m for m in reversed(self.marks) if m["examiner"] == examiner), None)
        if own:
            return own["phase"]
        if awaited := self.awaited(examiner, role):
            return awaited
        if role in STAFF and self.marks:
            return "adjudication"
        return "second" if self.double and self.marks else "first"

    def check(self, examiner: str, role: str, phase: str) -> None:
        """Refuse a mark that would break independence: both marks of a double marking by one examiner, or an
        adjudication by a non-adjudicator or by one of the two markers."""
        if phase == "adjudication" and role not in STAFF:
            raise ValueError(f"only an adjudicator or admin adjudicates, and {examiner} is an {role}")
        others = {"first": ("second", "adjudication"), "second": ("first", "adjudication"),
                  "adjudication": ("first", "second")}[phase]
        if examiner in self.markers(*others):
            raise ValueError(f"{examiner} has already marked this response in another phase; a {phase} mark must "
                             "come from someone else")

    def visible(self, examiner: str, role: str) -> list[dict[str, Any]]:
        """The marks this examiner may see: adjudicators and admins see all; an examiner sees their own, and the
        others' only once no mark of anyone is awaited (so no judgement still to come is swayed by them)."""
        if role in STAFF or self.final()["status"] in ("marked", "agreed", "adjudicated"):
            return list(self.marks)
        return [m for m in self.marks if m["examiner"] == examiner]

    def model_visible(self, examiner: str, role: str, blind: bool) -> bool:
        """Under blind marking the model's result (score, distribution, evidence) is hidden from a marker until
        they have marked; an adjudication is made with everything in view."""
        return not blind or any(m["examiner"] == examiner for m in self.marks) or (
            self.phase_for(examiner, role) == "adjudication")
