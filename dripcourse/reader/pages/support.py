"""Where to turn in a dark week: the support page, the line every writing page links it from,
and the places shown first after writing words of despair.

The support link never expires and opens nothing private (like pause), so it can sit in every
lesson's footer and still work years later. What a page shows is worked out as it is shown
(``reader.care``); no view here writes, logs or counts anything about it.
"""

from __future__ import annotations

import datetime as dt

from flask import g, render_template, url_for

from dripcourse import links
from dripcourse.courses.course import Course
from dripcourse.db import transaction
from dripcourse.models import Enrollment, Subscriber
from dripcourse.reader import care
from dripcourse.reader.pages.access import ROUTE, bp, course_of, link, load, runtime
from dripcourse.reader.reflections import JournalEntry


@bp.get("/s/<token>", **ROUTE)
def support(token: str) -> str | tuple[str, int]:
    """The reader's places to turn, and those of the course's other countries below."""
    (enrollment_id,) = load(links.SUPPORT, token, 1)
    with transaction(runtime().sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        if found is None or not g.link_token.opens(found):
            # Their data was deleted: no list is known, but the page still says where to turn.
            return render_template("support.html", course=None, mine=None, others=()), 410
        course = course_of(found)
        mine = care.places_for(course, found.subscriber)
        others = [
            (code, care.country_name(code), places)
            for code, places in course.support.countries
            if code != mine.country
        ]
        return render_template("support.html", course=course, mine=mine, others=others)


@bp.app_template_global()
def support_link() -> str:
    """The link to the places to turn of the reader whose page this is."""
    return url_for("dripcourse.support", token=link(links.SUPPORT, g.link_token.ids[0]))


def after_writing(course: Course, subscriber: Subscriber, text: str) -> care.PlacesToTurn | None:
    """The reader's places to turn when ``text``, just written, sounds like despair; else None.

    Shown on the page that confirms the save, first; kept nowhere.
    """
    return care.places_for(course, subscriber) if care.sounds_like_despair(text) else None


def on_the_journal(
    course: Course, subscriber: Subscriber, entries: list[JournalEntry], now: dt.datetime
) -> care.PlacesToTurn | None:
    """The reader's places to turn when a reflection saved today (by the page or by a reply:
    the journal is a reply's confirmation) sounds like despair; else None. Kept nowhere."""
    written = ((e.reflection.updated_at, e.reflection.body) for e in entries if e.reflection)
    if care.written_today_in_despair(written, subscriber.timezone, now):
        return care.places_for(course, subscriber)
    return None
