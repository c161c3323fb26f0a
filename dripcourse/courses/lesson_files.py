"""Reading a course's lesson files (day-01.md, ...): each Lesson, and a Finding for each problem.

A lesson is Markdown with YAML front matter. Every file is read even when another has errors,
and a lesson whose front matter is wrong is still returned with its text, so ``check`` reports
every problem in one run. Line numbers are counted in the file, so they match an editor's.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dripcourse.courses import support as support_file
from dripcourse.courses.course import Finding, Lesson, header_problem

LESSON_FILE = re.compile(r"^day-(\d{2,3})\.md$")
# A name meant as a lesson but spelled otherwise ("day-1.md", "Day_02.md"): a mistake, not a note.
LESSON_LIKE = re.compile(r"^day[-_ ]?\d+\.(md|markdown|txt)$", re.IGNORECASE)
REQUIRED_LESSON_KEYS = ("title", "subject", "prompt")
KNOWN_LESSON_KEYS = {"title", "subject", "preheader", "prompt", "questions"}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)


def read_lessons(
    folder: Path, findings: list[Finding]
) -> tuple[tuple[Lesson, ...], tuple[Lesson, ...]]:
    """The lessons without errors of their own, and those read despite errors (see
    ``course_folder.CourseReading``); the problems go to ``findings``."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name in ("course.toml", support_file.SUPPORT_FILE) or path.name.startswith("."):
            continue  # hidden files: editors' swap and backup files
        match = LESSON_FILE.match(path.name)
        if match is None:
            if LESSON_LIKE.match(path.name):
                findings.append(
                    Finding(path, 1, "error", "lesson files are named day-01.md, day-02.md, ...")
                )
            else:
                findings.append(Finding(path, 1, "ignored", "not a lesson (day-NN.md)"))
            continue
        day = int(match.group(1))
        if day in found:
            message = f"day {day} is also in {found[day].name}"
            findings.append(Finding(path, 1, "error", message, day))
            continue
        found[day] = path
    if not found:
        findings.append(Finding(folder, 1, "error", "no lessons (day-01.md, day-02.md, ...)"))
        return (), ()
    days = sorted(found)
    for missing in sorted(set(range(1, days[-1] + 1)) - set(days)):
        after = next(d for d in days if d > missing)
        message = f"day {missing} is missing; lessons must run 1, 2, 3 ... without gaps"
        findings.append(Finding(found[after], 1, "error", message, after))
    lessons: list[Lesson] = []
    unloaded: list[Lesson] = []
    for day in days:
        lesson, whole = _read_lesson(day, found[day], findings)
        if lesson is not None:
            (lessons if whole else unloaded).append(lesson)
    # Possibly incomplete: still useful to ``check``; ``load_course`` refuses it.
    return tuple(lessons), tuple(unloaded)


def _read_lesson(day: int, path: Path, findings: list[Finding]) -> tuple[Lesson | None, bool]:
    """The lesson in ``path``, and whether it has no errors of its own.

    A lesson whose front matter has errors is still returned, with what could be read of it
    (its text above all), so ``check`` can report the text's problems in the same run; only
    a file that cannot be read as text gives None.
    """
    before = len(findings)

    def error(line: int, message: str) -> None:
        findings.append(Finding(path, line, "error", message, day))

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        error(1, "not UTF-8 text")
        return None, False
    split = _FRONT_MATTER.match(text)
    if split is None:
        error(
            1,
            "no front matter: a lesson starts with a --- line, then title, subject and "
            "prompt, then another --- line",
        )
        return Lesson(day=day, title="", subject="", prompt="", body=text, path=path), False
    source = split.group(1)
    body_line = text.count("\n", 0, split.end()) + 1
    body = text[split.end() :]
    meta, key_lines = _parse_front_matter(source, path, day, findings)
    if meta is None:
        if not body.strip():
            error(body_line, "the lesson has no body")
        return Lesson(
            day=day, title="", subject="", prompt="", body=body, path=path, body_line=body_line
        ), False
    for key in REQUIRED_LESSON_KEYS:
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            where = key_lines.get(key, 1)
            error(where, f"{key} is missing or empty")
    for key in sorted(set(meta) - KNOWN_LESSON_KEYS, key=str):
        error(
            key_lines.get(key, 1),
            f"unknown front matter key {key!r} (known: {', '.join(sorted(KNOWN_LESSON_KEYS))})",
        )
    subject = str(meta.get("subject") or "")
    if "\n" in subject.strip() or "\r" in subject:
        error(key_lines.get("subject", 1), "subject must be one line")
    elif header_problem(subject.strip()):
        error(key_lines.get("subject", 1), f"subject: {header_problem(subject.strip())}")
    questions = meta.get("questions", [])
    if not isinstance(questions, list) or not all(
        isinstance(q, str) and q.strip() for q in questions
    ):
        error(key_lines.get("questions", 1), "questions must be a list of text lines")
        questions = []
    if not body.strip():
        error(body_line, "the lesson has no body")
    lesson = Lesson(
        day=day,
        title=str(meta.get("title") or "").strip(),
        subject=subject.strip(),
        prompt=str(meta.get("prompt") or "").strip(),
        preheader=str(meta.get("preheader") or "").strip(),
        questions=tuple(q.strip() for q in questions),
        body=body,
        path=path,
        body_line=body_line,
        key_lines=tuple(sorted(key_lines.items())),
    )
    return lesson, len(findings) == before


def _parse_front_matter(
    source: str, path: Path, day: int, findings: list[Finding]
) -> tuple[dict[str, object] | None, dict[str, int]]:
    """The front matter's keys and values, and the file line of each key (from 1).

    The block starts on the file's second line, after the opening ``---``.
    """
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        meta = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        findings.append(Finding(path, line, "error", _plain_yaml(exc), day))
        return None, {}
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(node, yaml.MappingNode | type(None)):
        findings.append(
            Finding(path, 2, "error", "front matter must be lines of `key: value`", day)
        )
        return None, {}
    lines = {}
    if node is not None:
        lines = {str(k.value): k.start_mark.line + 2 for k, _v in node.value}
    return meta, lines


def _plain_yaml(exc: yaml.YAMLError) -> str:
    """Say what is wrong with front matter in words a lesson writer knows."""
    problem = str(getattr(exc, "problem", "") or exc)
    if "mapping values are not allowed" in problem:
        return (
            "front matter: a value holds a colon followed by a space; "
            "put the whole value in double quotes"
        )
    unacceptable = re.search(r"unacceptable character #x([0-9a-fA-F]+)", problem)
    if unacceptable:
        code = int(unacceptable.group(1), 16)
        return f"front matter: unacceptable character U+{code:04X} (a control character); remove it"
    if "'\\t'" in problem or re.search(r"\btabs?\b", problem):
        return "front matter: a tab is used to indent; indent with spaces"
    if "could not find expected ':'" in problem:
        return "front matter: this line is not `key: value` (or a quote before it is not closed)"
    if "end of stream" in problem or "quoted scalar" in str(exc):
        return "front matter: a quote is opened and never closed"
    if "expected <block end>" in problem or "expected <block mapping start>" in problem:
        return "front matter: the indentation is uneven here"
    if "found character" in problem:
        return (
            "front matter: a value starts with a character YAML reserves (such as @ or `); "
            "put the value in double quotes"
        )
    return f"front matter is not valid YAML ({problem})"
