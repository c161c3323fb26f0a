"""Mail coming back: one inbound message's raw bytes become a decision (a reply saved to the
journal, a bounce, a complaint, an auto-reply, junk).

``route`` is the one routing step; ``listener`` (an SMTP server), the pipe command and ``imap``
(a mailbox polled) are the ways mail arrives, each handing raw bytes to it. ``reply_text``
finds what a reader wrote above the quoted lesson; ``sender`` who sent a reply; ``bounces``
and ``complaints`` read a report, and ``effects`` applies it (``apply_bounce``,
``apply_complaint``: the same for mail and for providers' webhooks).

Other packages use nothing from here; the adapters use ``route`` (process, Inbound, Limits,
Decision), ``effects``, ``listener`` and ``imap``. It uses reader (to save a reflection), people (to
suppress), courses and the foundation.
"""
