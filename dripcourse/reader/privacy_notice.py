"""The privacy page's text, made from the settings so that it cannot drift from them.

Every sentence that depends on a setting (how long reflections are kept, whether links
expire) is chosen here from that setting's value; the template only lays the sections out.
"""

from __future__ import annotations

from dataclasses import dataclass

from dripcourse.settings import Settings


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...]


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n:,} days"


def privacy_notice(settings: Settings) -> list[Section]:
    """What is stored, what is encrypted, who sees what, how long each thing is kept, how to
    delete it and whom to ask. Each sentence names its test in docs/security.md."""
    retention = settings.reflections_retention_days
    if retention:
        kept = (
            f"Each reflection is deleted automatically {_days(retention)} after you last "
            "saved it, with the note of any reply that saved it. You can delete it sooner "
            "yourself."
        )
    else:
        kept = (
            "Reflections are kept until you delete them, or until you ask us to delete "
            "everything about you; the note of a reply goes with the reflection it saved."
        )
    max_age = settings.reflect_max_age_days
    link_life = (
        f"The reflection and journal links stop working {_days(max_age)} after the email "
        "they came in was sent."
        if max_age
        else "The reflection and journal links do not expire."
    )
    by_email = (
        (
            "When you reply to a lesson email, the text you wrote (without the quoted lesson "
            "and your signature) is saved as that day's reflection, encrypted like the others. "
            "The email itself is not kept: only a note that a message arrived, for which "
            "lesson and when, so that it is not saved twice.",
            "A reply from another address than the one your lessons come to is not saved "
            "unless you say so: its text and that address are kept encrypted, like your "
            "reflections, for 7 days, and we send one email to your own address (never with "
            "the reply in it) with a link that shows it and asks whether to save it to your "
            "journal.",
        )
        if settings.reply_domain
        else ()
    )
    held_kept = (
        (
            "A reply from another address that you have not saved is deleted after 7 days, "
            "or as soon as you discard it.",
        )
        if settings.reply_domain
        else ()
    )
    held_deleted = (
        "Both also delete any reply from another address still waiting for you. "
        if settings.reply_domain
        else ""
    )
    team = settings.team_name
    contact = (
        f"To ask about your data, or to have it deleted for you, write to {team} at "
        f"{settings.team_contact}."
        if settings.team_contact
        else f"To ask about your data, or to have it deleted for you, ask {team}, who "
        "enrolled you in this course."
    )
    return [
        Section(
            "What we store",
            (
                "Your email address, your name and your time zone, so that each lesson "
                "reaches you at your own morning.",
                "Your country, only if the course team set it, to choose which places to turn "
                "you are shown (otherwise that comes from your time zone).",
                "Which course you take, which day you are on, whether you paused, and when "
                "each lesson was sent to you, with the version of the lesson you received.",
                "The reflections you write.",
                "Your answers to the course's check-in questions (1 to 5), if it asks any.",
                *by_email,
                "Nothing else: the emails and these pages have no tracking pixels, no "
                "click-tracking and no scripts, and the pages set no cookies.",
            ),
        ),
        Section(
            "What is encrypted, and with which key",
            (
                "Your reflections are encrypted before they are stored, with a key of their "
                "own (the reflections key), kept apart from the database and apart from the "
                "key that signs your links. A copy of the database alone shows none of them.",
                "Your address, name, time zone and the record of lessons sent are not "
                "encrypted: they are needed to send each lesson. They are readable only by "
                "the program and the people who run its servers.",
            ),
        ),
        Section(
            "Who can see what",
            (
                "You: everything of yours, through the links in your lesson emails. There is "
                "no password: the link is the key, so anyone who has your links can open your "
                "reflections and your journal. Please don't forward the emails. " + link_life,
                "The course's operators see counts (how many people wrote a reflection on "
                "each day), not what you wrote. Reading the text takes a deliberate export, "
                "and each export is written in an operator log with who ran it and when.",
                "The course's report shows the programme counts only (how many people "
                "received each lesson, wrote, or gave each check-in answer), and never a "
                "count of fewer than five people.",
                "The staff who write the lessons may preview a lesson as you would receive it: "
                "they see your name and how the lesson greets you, never your reflections, "
                "and the preview's links do not open anything of yours.",
                "Nobody else, but what you choose to share with your cohort (below). No link "
                "or reply address of yours can come to open someone else's journal, nor "
                "theirs yours.",
            ),
        ),
        Section(
            "Your cohort's circle",
            (
                "Nothing you write is seen by another member unless you choose so, for that "
                "very reflection: the reflection page has a box, \u201cShare with my "
                "cohort\u201d, which is off until you tick it. What you share is a copy of "
                "the text as you saved it on that page, encrypted like your reflections; a "
                "reply by email is never shared by itself.",
                "Who sees it: the members of your cohort who have received that day's "
                "lesson, under the lesson, through their own links; never in an email. They "
                "see you as \u201cA colleague\u201d, or by your first name and initial if you "
                "choose so, never your email address. They can leave you a short note, which you "
                "see in your journal, and delete their own.",
                "The course team can see who shared what and who wrote each note, to look "
                "after the circle: a member can report something, and a moderator can hide "
                "it (you then see it as hidden, with the reason). Each time an operator "
                "reads the circle, it is written in the operator log.",
                "You can take it back at any time: untick the box and save, or withdraw it "
                "under the lesson, and it leaves the circle at once with the notes under it. "
                "Deleting your reflections, or everything about you, deletes everything you "
                "shared and every note you wrote. Unsubscribing keeps what you shared until "
                "you delete it.",
            ),
        ),
        Section(
            "How long we keep it",
            (
                kept,
                "The note that an email arrived which saved nothing (an automatic reply, a "
                "message we could not use) is deleted after 7 days.",
                *held_kept,
                "Everything else is kept while you take the course, and afterwards so that "
                "your journal stays available, until you delete it.",
                "After you delete everything, only your email address stays, on a do-not-mail "
                "list, for good, so that nothing is ever sent to it again.",
            ),
        ),
        Section(
            "How to delete it",
            (
                "Your journal has two links: \u201cDelete my reflections\u201d deletes every "
                "reflection you have written; \u201cDelete everything about me\u201d deletes "
                "your name, time zone, courses, the record of lessons sent to you and of your "
                "replies, any lesson to you still waiting to be sent, your reflections and "
                "your check-in answers. " + held_deleted + "Both ask you to confirm first.",
                "After \u201cDelete everything about me\u201d we keep only your email address, "
                "on a do-not-mail list, so that nothing is ever sent to it again, and your old "
                "links and reply address stop working. You can also ask the course team to do "
                "this for you.",
                "Unsubscribing stops the lessons but deletes nothing; your journal stays "
                "available through your links.",
            ),
        ),
        Section(
            "Where to turn, and what happens when you write about a dark time",
            (
                "Every page you write on links to places to turn in a hard week: the list for "
                "the country of your time zone, or for the country the course team set for you.",
                "When a reflection you have just saved holds words of despair or self-harm "
                "(from a short list kept with the program), the page that confirms it shows "
                "those places first. For a reply by email, your journal shows them at its top "
                "that day.",
                "That check reads only the words you just wrote, while the page is being made. "
                "Nothing about it is stored, logged, counted or sent, and no one is alerted: "
                "the course team cannot see that it happened, and no one will contact you "
                "because of it. It is not a clinical service; if you are in danger now, call "
                "your local emergency number.",
            ),
        ),
        Section(f"Who runs this course: {team}", (contact,)),
    ]
