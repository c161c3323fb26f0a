"""The subscriber's pages, one blueprint: reflect, journal, downloads and the lesson
(``reflecting``), pause, unsubscribe, delete and the privacy notice (``leaving``), where to
turn in a dark week (``support``), a reply from another address saved or discarded
(``confirming``), and what a link opens and how its forms are checked (``access``).

Only the ``dripcourse.web`` adapter uses this package: it registers ``access.bp``.
"""
