"""Mail leaving: the claim of due lessons, the send path, the SMTP transport and what keeps them
honest when something fails.

``claim`` turns enrollments whose lesson is due into deliveries (the tick), ``take``, ``batch``
and ``record`` send a batch of them and record each outcome, ``transport`` talks SMTP (or
writes .eml files), ``ratelimit`` and ``breaker`` hold the pace and the relay pause, and
``outages``, ``queue_loss``, ``recovery``, ``liveness`` and ``due`` find and explain lessons
that are late.

Other packages use nothing from here; the adapters (tasks, cli, runtime) use ``claim``
(tick, requeue_lost), ``batch`` (send_batch, send_delivery), ``transport``
(transport_from_url and its errors) and the finding and explaining modules. It uses courses,
people (to stop an enrollment or suppress an address) and the foundation.
"""
