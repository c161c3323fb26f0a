"""The programme's report as a page: inline SVG charts, each with the table of its numbers.

It draws only what ``report.build`` counted, hidden figures included, so the page and the
JSON cannot disagree. The charts are pygal's SVG with its script taken out: they need no
JavaScript, print, and save as PDF from a browser. A hidden figure is a gap in its chart and
"fewer than N" in the table under it; each chart has a title and a description that screen
readers announce, and the table says the same in words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import pygal
from markupsafe import Markup
from pygal.style import Style

from dripcourse.people.report import STATUSES

# Colours that keep 4.5:1 against white (text and bars alike), and tell apart in grey print.
COLOURS = ("#1f5f8b", "#b4441a", "#3f6f1a", "#6b3fa0", "#7a5c00", "#8b1f4f")
STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#2b2b2b",
    foreground_strong="#1f1f1f",
    foreground_subtle="#595959",
    opacity="1",
    opacity_hover="1",
    colors=COLOURS,
    font_family="Helvetica, Arial, sans-serif",
    title_font_size=20,
    label_font_size=14,
    major_label_font_size=14,
    value_font_size=14,
    legend_font_size=15,
)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("dripcourse", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class Chart:
    """One chart: its SVG, what it shows in a sentence, and the table of its numbers."""

    key: str  # which chart it is, for the page to put its neighbours by it
    title: str
    description: str
    svg: Markup
    head: Sequence[str]
    rows: Sequence[Sequence[object]]


def _number(value: object) -> float | None:
    """A figure as pygal draws it: hidden ones (text) are a gap."""
    return value if isinstance(value, int) else None  # type: ignore[return-value]


def _svg(chart: Any, title: str, description: str) -> Markup:
    """pygal's SVG, with no script, and a title and description read out as the image's."""
    chart.config.title = title
    text = chart.render(is_unicode=True, disable_xml_declaration=True)
    text = _COMMENT.sub("", _SCRIPT.sub("", text))
    ident = re.search(r'id="(chart-[0-9a-f-]+)"', text)
    desc_id = f"{ident.group(1) if ident else 'chart'}-desc"
    opening = text.index(">", text.index("<svg")) + 1
    head = (
        text[: opening - 1]
        + f' role="img" aria-label="{Markup.escape(title)}" aria-describedby="{desc_id}">'
    )
    return Markup(
        head + f'<desc id="{desc_id}">{Markup.escape(description)}</desc>' + text[opening:]
    )


def _config(**options: object) -> dict[str, object]:
    base: dict[str, object] = {
        "style": STYLE,
        "js": [],
        "height": 360,
        "width": 800,
        "print_values": False,  # the table under each chart gives the numbers
        "print_zeroes": False,
        "show_y_guides": True,
        "include_x_axis": True,
        "legend_at_bottom": True,
        "truncate_legend": -1,
        "truncate_label": -1,
        "no_data_text": "nothing to draw: no figure, or every one hidden",
        "no_data_font_size": 18,
        "margin": 16,
    }
    base.update(options)
    return base


def _days(n: int, first: int = 1) -> list[str]:
    return [str(d) for d in range(first, n + 1)]


def funnel_chart(cohort: dict[str, Any]) -> Chart:
    received = cohort["funnel"]["received"]
    chart = pygal.Bar(**_config(show_legend=False, x_title="Lesson", y_title="People"))
    chart.x_labels = [str(r["day"]) for r in received]
    chart.add("received", [_number(r["people"]) for r in received])
    title = f"{cohort['name']}: who received each lesson"
    return Chart(
        "funnel",
        title,
        "How many people each lesson reached, from the first to the last.",
        _svg(chart, title, "Bars: people who received each lesson, by lesson number."),
        ["Lesson", "People who received it"],
        [[r["day"], r["people"]] for r in received],
    )


def left_chart(cohort: dict[str, Any]) -> Chart:
    rows = cohort["funnel"]["left_after"]
    chart = pygal.StackedBar(**_config(x_title="Last lesson received", y_title="People"))
    chart.x_labels = [str(r["day"]) for r in rows]
    chart.add("unsubscribed", [_number(r["unsubscribed"]) for r in rows])
    chart.add("bounced", [_number(r["bounced"]) for r in rows])
    title = f"{cohort['name']}: after which lesson people left"
    return Chart(
        "left",
        title,
        "People who unsubscribed or whose address bounced, by the last lesson they received "
        "(0: before the first). A tall bar marks a lesson that loses readers.",
        _svg(chart, title, "Stacked bars: people who left after each lesson, by how."),
        ["Last lesson", "Unsubscribed", "Bounced"],
        [[r["day"], r["unsubscribed"], r["bounced"]] for r in rows],
    )


def reflections_chart(cohort: dict[str, Any]) -> Chart:
    rows = cohort["reflections"]
    circle = any(r["shared"] is not None for r in rows)
    chart = pygal.Bar(**_config(x_title="Lesson", y_title="People"))
    chart.x_labels = [str(r["day"]) for r in rows]
    chart.add("wrote", [_number(r["wrote"]) for r in rows])
    chart.add("on the web", [_number(r["web"]) for r in rows])
    chart.add("by email", [_number(r["email"]) for r in rows])
    head = ["Lesson", "Wrote", "On the web", "By email"]
    shared = ""
    if circle:
        chart.add("shared to the circle", [_number(r["shared"]) for r in rows])
        head.append("Shared to the circle")
        shared = ", and how many shared theirs with the cohort's circle (less any a moderator hid)"
    title = f"{cohort['name']}: reflections per lesson"
    return Chart(
        "reflections",
        title,
        "How many people wrote a reflection on each lesson's question, and where the latest "
        f"text came from: the reflect page or a reply by email{shared}. "
        "What they wrote is not read.",
        _svg(
            chart,
            title,
            "Bars per lesson: people who wrote, on the web, by email"
            + (", shared to the circle." if circle else "."),
        ),
        head,
        [
            [r["day"], r["wrote"], r["web"], r["email"], *([r["shared"]] if circle else [])]
            for r in rows
        ],
    )


def arrival_chart(cohort: dict[str, Any]) -> Chart:
    delivery = cohort["delivery"]
    window = delivery["window"]
    rows = delivery["arrival_hours"]
    chart = pygal.Bar(**_config(x_title="Local hour of arrival", y_title="Lessons"))
    chart.x_labels = [f"{r['hour']:02d}" for r in rows]
    if window is not None:
        first = int(window["from"][:2])
        last = int(window["until"][:2])
        inside = [first <= r["hour"] <= last for r in rows]
        chart.add(
            f"hours of the window ({window['from']}-{window['until']})",
            [_number(r["lessons"]) if i else None for r, i in zip(rows, inside, strict=True)],
        )
        chart.add(
            "outside the window",
            [None if i else _number(r["lessons"]) for r, i in zip(rows, inside, strict=True)],
        )
        span = f"the send window, {window['from']} to {window['until']} local"
    else:
        chart.add("lessons", [_number(r["lessons"]) for r in rows])
        span = "the send window (unknown: the course does not load)"
    title = f"{cohort['name']}: when lessons arrived, local time"
    return Chart(
        "arrival",
        title,
        f"Lessons sent, by the hour they arrived in each reader's own time zone, against {span}.",
        _svg(chart, title, f"Bars: lessons by local hour of arrival; {span}."),
        ["Local hour", "Lessons"],
        [[f"{r['hour']:02d}:00", r["lessons"]] for r in rows],
    )


def today_chart(cohort: dict[str, Any]) -> Chart:
    rows = cohort["today"]
    chart = pygal.Bar(
        **_config(show_legend=False, x_title="Last lesson received", y_title="People")
    )
    chart.x_labels = [str(r["after_day"]) for r in rows]
    chart.add("people", [_number(r["people"]) for r in rows])
    title = f"{cohort['name']}: where people are today"
    return Chart(
        "today",
        title,
        "People still taking the course, by the last lesson they received (0: none yet).",
        _svg(chart, title, "Bars: people still taking the course, by their last lesson."),
        ["Last lesson", "People"],
        [[r["after_day"], r["people"]] for r in rows],
    )


def side_by_side_chart(cohorts: Sequence[dict[str, Any]]) -> Chart:
    """Each cohort's share of its people who received each lesson, one line per cohort."""
    longest = max((c["lessons"] for c in cohorts), default=0)
    chart = pygal.Line(
        **_config(x_title="Lesson", y_title="% of enrolled", range=(0, 100), print_values=False)
    )
    chart.x_labels = _days(longest)
    rows = []
    for cohort in cohorts:
        enrolled = cohort["funnel"]["enrolled"]
        shares = []
        for r in cohort["funnel"]["received"]:
            both = isinstance(enrolled, int) and enrolled and isinstance(r["people"], int)
            shares.append(round(100 * r["people"] / enrolled) if both else None)
        chart.add(cohort["name"], shares)
        rows.append([cohort["name"], *[s if s is not None else "-" for s in shares]])
    title = "Cohorts side by side: share who received each lesson"
    return Chart(
        "side_by_side",
        title,
        "For each cohort, the share of the people enrolled who received each lesson (a "
        "hidden figure leaves a gap). Cohorts of different sizes compare on one scale.",
        _svg(chart, title, "Lines, one per cohort: percent of enrolled receiving each lesson."),
        ["Cohort", *[f"Lesson {d}" for d in range(1, longest + 1)]],
        rows,
    )


def checkin_chart(cohort: dict[str, Any], question: dict[str, Any]) -> Chart:
    chart = pygal.Bar(**_config(x_title="Answer", y_title="People"))
    ends = {1: question["low"], 5: question["high"]}
    chart.x_labels = [
        f"{a['answer']} ({ends[a['answer']]})" if ends.get(a["answer"]) else str(a["answer"])
        for a in question["start"]["answers"]
    ]
    for when, label in (("start", "first lesson"), ("end", "last lesson")):
        chart.add(label, [_number(a["people"]) for a in question[when]["answers"]])
    title = f"{cohort['name']}: check-in {question['question']}, start and end"
    start, end = question["start"], question["end"]
    return Chart(
        "checkin",
        title,
        f"\u201c{question['wording']}\u201d ({question['scale']}): "
        "how many people gave each answer in the first lesson and in the last.",
        _svg(chart, title, "Bars per answer 1 to 5: people answering so at the start and the end."),
        ["Answer", "First lesson", "Last lesson"],
        [
            *[
                [a["answer"], a["people"], b["people"]]
                for a, b in zip(start["answers"], end["answers"], strict=True)
            ],
            ["Answered", start["answered"], end["answered"]],
        ],
    )


def cohort_charts(cohort: dict[str, Any]) -> list[Chart]:
    charts = [funnel_chart(cohort), left_chart(cohort), reflections_chart(cohort)]
    charts.append(arrival_chart(cohort))
    if cohort["today"] is not None:
        charts.append(today_chart(cohort))
    charts += [checkin_chart(cohort, q) for q in cohort["checkins"]]
    return charts


# What a bounce or a complaint did, and where it came from, in the page's words.
EFFECT_WORDS = {
    ("bounce", "suppress"): "the address suppressed (it does not exist)",
    ("bounce", "soft"): "soft: counted toward suppression (full, disabled, expired)",
    ("bounce", "warn"): "about our sending: address kept, a warning",
    ("bounce", "note"): "noted on the lesson only",
    ("complaint", "complained"): "marked as spam: address suppressed",
    ("complaint", "unsubscribe"): "unsubscribed through their provider",
    ("complaint", "warn"): "about our sending: address kept, a warning",
}


def problem_rows(kind: str, counted: dict[str, Any]) -> list[list[object]]:
    """A table's rows for one kind of report: by reason, by what it did, by how it came."""
    rows: list[list[object]] = [["All", counted["total"]]]
    rows += [[f"Reason: {r['reason']}", r["reports"]] for r in counted["by_reason"]]
    rows += [
        [f"Effect: {EFFECT_WORDS.get((kind, r['effect']), r['effect'])}", r["reports"]]
        for r in counted["by_effect"]
    ]
    rows += [
        [
            "Came by mail to our bounce address"
            if r["source"] == "mail"
            else f"Came by the {r['source']} webhook",
            r["reports"],
        ]
        for r in counted["by_source"]
    ]
    return rows


def warning_text(warning: dict[str, Any]) -> str:
    """One deliverability warning in force, in words (no address: there is none to give)."""
    codes = f" {', '.join(warning['statuses'])}" if warning["statuses"] else ""
    last = f", the last {warning['last']}" if warning["last"] else ""
    noun = "bounces" if warning["kind"] == "bounce" else "complaints"
    return f"{warning['reports']} {noun} ({warning['reason']}{codes}){last}"


def fragment(data: dict[str, Any]) -> Markup:
    """The report's body: for the studio's page and the stand-alone file alike."""
    cohorts = data["cohorts"]
    return Markup(
        _env.get_template("report_body.html").render(
            data=data,
            statuses=STATUSES,
            problem_rows=problem_rows,
            warning_text=warning_text,
            side_by_side=side_by_side_chart(cohorts) if len(cohorts) > 1 else None,
            charts={c["name"]: cohort_charts(c) for c in cohorts},
        )
    )


def page(data: dict[str, Any]) -> str:
    """The report as one HTML file: no script, no file or address outside it."""
    return _env.get_template("report.html").render(body=fragment(data), data=data)
