"""Which changes to a course are safe while people are taking it, and which are refused.

The rule:
- appending a lesson reaches everyone who has not finished (the claim compares the day each
  person is on with the course's length at the moment it runs); people who had finished
  before it was added stay finished;
- editing a lesson's words changes what is sent from then on (workers load courses when they
  start: restart them after an edit); what was already sent stays as it was;
- removing or renumbering a lesson someone is past is refused by `dripcourse check`: their
  day counts would point at another lesson, so they would get one twice or miss one, and
  their journal would show their reflections against other questions.

Renumbering leaves no trace in a course folder, so it is recognised from what people wrote:
each reflection keeps the question as it was asked, and a question now asked on another day
means the lessons moved.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.models import Cohort, Enrollment, Reflection


def problems(session: Session, course: Course) -> list[str]:
    """Why ``course`` as it now is would break it for people already in it; [] if it is safe."""
    found = []
    past_the_end = session.execute(
        select(Cohort.name, func.max(Enrollment.day), func.count())
        .join(Enrollment, Enrollment.cohort_id == Cohort.id)
        .where(Cohort.course_slug == course.slug, Enrollment.day > course.length)
        .group_by(Cohort.name)
        .order_by(Cohort.name)
    ).all()
    for cohort, furthest, count in past_the_end:
        found.append(
            f"{course.path}: cohort {cohort!r}: {count} people have had Day {furthest}, but the "
            f"course now has {course.length} lessons; a lesson people are past may not be "
            "removed (put it back; add new lessons after the last one)"
        )
    day_of = {}
    for lesson in course.lessons:
        day_of.setdefault(lesson.prompt.strip(), lesson.day)
    moved = session.execute(
        select(Reflection.day, Reflection.prompt, func.count())
        .join(Enrollment, Reflection.enrollment_id == Enrollment.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .where(Cohort.course_slug == course.slug)
        .group_by(Reflection.day, Reflection.prompt)
        .order_by(Reflection.day)
    ).all()
    for day, prompt, count in moved:
        now_on = day_of.get(prompt.strip())
        if now_on is None or now_on == day:
            continue  # the same day, or a question reworded: an edit, which is allowed
        found.append(
            f"{course.lesson(now_on).path}: the question {count} people answered as Day {day} "
            f"is now Day {now_on}'s; lessons people are past may not be renumbered "
            "(keep their numbers; add new lessons after the last one)"
        )
    return found
