"""SQLAlchemy 2 models: subscribers, cohorts, enrollments, deliveries, reflections, suppressions.

One module per part of the data; everything is imported here, so `dripcourse.models` is the
one name the rest of the code uses and the metadata holds every table once this is imported.
"""

from dripcourse.models.base import (
    LINK_KEY_CHARS,
    MAX_ID,
    Base,
    DeliveryStatus,
    EnrollmentStatus,
    UTCDateTime,
    enum_type,
    new_link_key,
    random_link_key,
)
from dripcourse.models.circle import (
    CircleMember,
    CircleNote,
    CirclePost,
    CircleReport,
)
from dripcourse.models.enrollments import (
    Cohort,
    Delivery,
    Enrollment,
    LessonVersion,
    Subscriber,
    Suppression,
)
from dripcourse.models.health import (
    CircuitBreaker,
    DeliveryProblem,
    WorkerBeat,
)
from dripcourse.models.inbound import (
    HeldReply,
    InboundKind,
    InboundMessage,
    NoticeState,
    WebhookEvent,
)
from dripcourse.models.journal import (
    CheckinAnswer,
    Reflection,
)

__all__ = [
    "Base",
    "CheckinAnswer",
    "CircleMember",
    "CircleNote",
    "CirclePost",
    "CircleReport",
    "CircuitBreaker",
    "Cohort",
    "Delivery",
    "DeliveryProblem",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "HeldReply",
    "InboundKind",
    "InboundMessage",
    "LINK_KEY_CHARS",
    "LessonVersion",
    "MAX_ID",
    "NoticeState",
    "Reflection",
    "Subscriber",
    "Suppression",
    "UTCDateTime",
    "WebhookEvent",
    "WorkerBeat",
    "enum_type",
    "new_link_key",
    "random_link_key",
]
