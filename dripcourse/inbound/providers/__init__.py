"""Bounces and complaints an email provider reports by webhook, not by mail.

SES, Mailgun, SendGrid and Postmark put their own address in the envelope, so our
``bounce+`` address never hears of a failure: they call a URL instead. One module per
provider checks its own signature scheme before anything in the request is believed, and
reads its events into the classifier's values (``Bounce``, ``Complaint``); ``deliveries``
finds the lesson an event is about by the header we set or our Message-ID, never by the
address alone, and ``record`` applies the outcome once. ``endpoints`` is the Flask
blueprint the web app mounts under ``/webhooks/<provider>``.
"""
