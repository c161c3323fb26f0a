"""Everything a subscriber touches: their reflections (sealed at rest), their journal, the
privacy notice and erasure, and the pages behind the links in every lesson.

``reflections`` keeps what a reader writes, ``journal`` shows and exports it, ``privacy``
forgets a person, ``privacy_notice`` says what is kept, ``care`` picks a reader's places to
turn in a dark week and whether what they just wrote asks for them first, and ``pages`` holds
the Flask views
(the app around them is the ``dripcourse.web`` adapter).

Other packages use ``reflections`` (append_from_email, lesson_or_none, ReflectionRejected:
inbound saves replies through it). It uses people, courses and the foundation.
"""
