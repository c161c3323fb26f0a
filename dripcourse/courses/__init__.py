"""A course folder becoming personalised mail, and the staff's view of it before anyone gets it.

A course is a folder of Markdown lessons under emails/; ``course_folder`` reads and checks it
(``course_toml`` its settings, ``lesson_files`` its lessons) into the values of ``course``,
``render`` turns a lesson into one inlined HTML and text template (in ``sandbox``), ``message``
builds one reader's message from it, ``wire`` personalises that
into wire bytes per reader, and ``preview`` and ``studio`` show staff what a reader would get.

Other packages use: ``course`` (Course, Lesson, course_slugs), ``course_folder``
(load_course), ``render`` (Renderer, RenderedLesson, Personal), ``message`` (build_message,
message_id, reply_addresses, delivery_headers, TAG_NAME, TAG_HEADER), ``headers`` (the header
values and WIRE_POLICY), ``wire`` (personalise, WireMessage, as_wire, wire_bytes), ``small_notice``
(plain_notice: the journal link and the held-reply question), ``greeting`` (derive_greeting),
``lessons_sent`` (record_version, the versions readers were sent). It uses only the
foundation.
"""
