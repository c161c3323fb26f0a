"""The operator's model of who is in which cohort: enrolling (one person or a CSV), changing one
person (pause, move, set the day or the zone), the do-not-mail list and the status report.

Other packages use ``enrollment`` (enroll, stop_enrollment, suppress): sending and inbound stop
an enrollment or suppress an address through it; ``signup`` checks the details of a person to
enroll. ``changes``, ``csv_file`` and ``importing`` (reading a CSV file, then enrolling its
rows), ``suppressions`` and ``status`` serve the CLI; ``pausing`` (pause and resume) serves the
CLI and the reader's pause page; ``rejoining`` (undoing an unsubscribe) serves the pages. It
uses courses and the foundation.
"""
