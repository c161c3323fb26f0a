"""One Settings object: built-in embedded defaults, then a TOML file, then DRIPCOURSE_* vars.

It stays one module (about 410 lines): every setting's rule is checked here, once, at start,
so a wrong setting stops the program with its name before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import secrets
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dripcourse.encryption import parse_keys
from dripcourse.errors import ConfigError
from dripcourse.files import private_dir, write_new
from dripcourse.mail_url import parse_mail_url, worst_case_send_seconds
from dripcourse.redact import redact_url
from dripcourse.validate import check_address
from dripcourse.webhook_settings import check_webhooks

CONFIG_ENV = "DRIPCOURSE_CONFIG"
DEFAULT_CONFIG = Path("config/default.toml")
# A key shorter than this can be guessed, and every link it signs forged.
MIN_SECRET_KEY_BYTES = 32
_FEEDBACK_ID = re.compile(r"[A-Za-z0-9._:-]{1,120}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}", re.I
)


@dataclass(frozen=True)
class Settings:
    """Everything the scheduler needs to know, resolved once at start."""

    database_url: str = "sqlite:///var/dripcourse.sqlite3"
    broker_url: str = "sqla+sqlite:///var/broker.sqlite3"
    mail_url: str = "file://var/outbox"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str = ""
    emails_dir: str = "emails"
    var_dir: str = "var"
    message_id_domain: str = "dripcourse.localhost"
    # A Feedback-ID header on every lesson (for providers' complaint reports), e.g.
    # "lessons:programme:dripcourse"; empty: none.
    feedback_id: str = ""
    # Scheduler
    tick_seconds: float = 60.0
    batch_size: int = 500
    # Deliveries one worker task sends in a row over its connection (benchmarks/RESULTS.md).
    send_batch_size: int = 100
    requeue_after_seconds: int = 900
    send_lease_seconds: int = 300
    # A passing failure is retried until either runs out: attempts, or hours since the lesson
    # was claimed. Failures of our own set-up (relay login, TLS, relay down) spend neither.
    max_attempts: int = 30
    retry_hours: float = 24.0
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    # A failure of our own set-up pauses all sending; the relay is tried again after this
    # long, then twice as long each time it still fails, at most 10 minutes.
    relay_retry_seconds: float = 30.0
    # Global send-rate limit in messages per second, shared through Redis (0 = no limit).
    rate_limit_per_second: float = 0.0
    rate_limit_redis_url: str = ""
    smtp_timeout_seconds: float = 20.0
    # `dripcourse health` fails when lessons wait and no worker has taken a task for this long.
    worker_stale_seconds: int = 300
    # Links
    reflect_max_age_days: int = 0
    # Web
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    reflection_max_chars: int = 20000
    # The cohort circle: below this many members, the share choice warns that anonymity is weak.
    circle_small_cohort: int = 5
    # Staff: the only addresses ``send-test`` may mail (a TOML list or comma-separated text).
    staff_emails: str = ""
    # The people running the course, as the privacy page and every lesson's footer name them.
    team_name: str = "the course team"
    team_contact: str = ""  # their address for questions about a subscriber's data
    # Reflections: sealed under their own key(s), comma-separated (the first seals, all open);
    # empty on the embedded set-up: made once and kept in var/reflections_key.
    reflections_key: str = ""
    # Delete reflections this many days after they were last written (0 = keep them).
    reflections_retention_days: int = 0
    # The report hides any figure counted from fewer people than this (never fewer than 5).
    report_min_people: int = 5
    # Reply by email (docs/inbound.md): lessons carry Reply-To reflect+TOKEN@reply_domain and
    # go out from bounce+TOKEN@reply_domain; empty: no reply address, replies are not read.
    reply_domain: str = ""
    # Signs the reply and bounce addresses instead of secret_key (so either can be changed alone).
    inbound_secret: str = ""
    # What inbound mail may save: replies per subscriber per day, and from everyone per hour.
    inbound_max_per_subscriber_per_day: int = 20
    inbound_max_per_hour: int = 500
    # A reply from another address is held and its reader asked, at most this many times per
    # reader per day (0: such replies are not kept and nobody is asked).
    inbound_max_notices_per_subscriber_per_day: int = 3
    # The largest inbound message taken, in bytes (the listener refuses bigger ones).
    inbound_max_bytes: int = 1_000_000
    # The authserv-id the MTA in front writes in its Authentication-Results header; when set,
    # a reply is saved only if that header shows DMARC (or aligned DKIM or SPF) passing for
    # the From domain. Empty: the header is not read (docs/inbound.md says what that means).
    inbound_trusted_authserv_id: str = ""
    # Soft bounces (mailbox full or disabled, expired) suppress an address only after this
    # many within bounce_soft_window_days, the first and the last bounce_soft_days apart.
    bounce_soft_failures: int = 3
    bounce_soft_days: int = 5
    bounce_soft_window_days: int = 30
    # Where `dripcourse run` (with reply_domain set) and `inbound serve` listen for SMTP.
    inbound_host: str = "127.0.0.1"
    inbound_port: int = 2525
    # Email providers' webhooks (docs/production.md, "Sending through an email provider"):
    # each is on when its secret is set, and lessons then carry the header it hands back.
    # SES: the SNS topic(s) whose signed notifications are taken, comma-separated ARNs.
    ses_topic_arn: str = ""
    mailgun_webhook_signing_key: str = ""
    # SendGrid's signed event webhook: its verification key (base64 DER, as shown, or PEM).
    sendgrid_webhook_public_key: str = ""
    # Postmark: the user and password written into the webhook URL, and/or a secret sent in
    # the custom header X-Dripcourse-Secret; every one that is set must match.
    postmark_webhook_user: str = ""
    postmark_webhook_password: str = ""
    postmark_webhook_secret: str = ""
    # A signed webhook request (SES, Mailgun, SendGrid) older than this is refused as a replay.
    webhook_max_age_seconds: int = 300
    # Where the settings came from, for error messages.
    source: str = field(default="built-in defaults", compare=False)

    @property
    def staff_addresses(self) -> tuple[str, ...]:
        """The ``staff_emails`` setting as a list."""
        return tuple(a.strip() for a in self.staff_emails.split(",") if a.strip())

    @property
    def webhook_providers(self) -> tuple[str, ...]:
        """The email providers whose webhook is set up, in a fixed order."""
        on = {
            "ses": self.ses_topic_arn,
            "mailgun": self.mailgun_webhook_signing_key,
            "sendgrid": self.sendgrid_webhook_public_key,
            "postmark": self.postmark_webhook_password or self.postmark_webhook_secret,
        }
        return tuple(name for name, secret in on.items() if secret)

    @property
    def ses_topic_arns(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.ses_topic_arn.split(",") if a.strip())

    def path(self, value: str) -> Path:
        """Resolve a relative path setting against the current directory."""
        return Path(value).expanduser().resolve()


# Text settings that also take a TOML list (kept as comma-separated text, like the environment).
LIST_SETTINGS = {"staff_emails"}

_ENV_FIELDS = {
    f.name: f"DRIPCOURSE_{f.name.upper()}"
    for f in dataclasses.fields(Settings)
    if f.name != "source"
}


# DRIPCOURSE_* variables that are not settings: the settings file, a command's own option
# (inbound poll's URL), and the tests' and benchmarks' own (by prefix).
OTHER_VARIABLES = {CONFIG_ENV, "DRIPCOURSE_INBOUND_IMAP_URL", "DRIPCOURSE_SCREENSHOTS"}
OTHER_PREFIXES = ("DRIPCOURSE_TEST_", "DRIPCOURSE_BENCH_")


def _check_variables(env: Mapping[str, str]) -> None:
    """Refuse a DRIPCOURSE_* variable that names no setting, as a TOML key that names none is
    refused: a misspelt one (DRIPCOURSE_TICK_SECOND) would otherwise be ignored without a word."""
    known = set(_ENV_FIELDS.values()) | OTHER_VARIABLES
    for var in sorted(env):
        if (
            var.startswith("DRIPCOURSE_")
            and var not in known
            and not var.startswith(OTHER_PREFIXES)
        ):
            close = difflib.get_close_matches(var, sorted(_ENV_FIELDS.values()), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"environment: unknown setting {var}{hint}")


def load_settings(
    config_path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Build the Settings: defaults, then the TOML file, then the environment.

    The file is ``config_path``, else ``$DRIPCOURSE_CONFIG``, else ``config/default.toml`` when it
    exists in the current directory. Every value is checked here so a wrong setting stops the
    program at start, with the setting's name, and never mid-send.
    """
    env = os.environ if environ is None else environ
    _check_variables(env)
    values: dict[str, object] = {}
    sources = []
    path = config_path or env.get(CONFIG_ENV)
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        values.update(_read_toml(Path(path)))
        sources.append(str(path))
    for name, var in _ENV_FIELDS.items():
        if var in env:
            values[name] = env[var]
            sources.append(var)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    typed: dict[str, object] = {}
    for name, raw in values.items():
        typed[name] = _coerce(name, raw, fields[name].type)
    settings = Settings(**typed, source=", ".join(sources) or "built-in defaults")  # type: ignore[arg-type]
    validate(settings)
    return settings


def _read_toml(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    flat: dict[str, object] = {}
    known = set(_ENV_FIELDS)
    for key, value in data.items():
        # Sections are only for readability: [scheduler] tick_seconds = 60 is tick_seconds.
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for name, inner in items:
            if name not in known:
                raise ConfigError(f"{path}: unknown setting {name!r}")
            flat[name] = inner
    return flat


def _coerce(name: str, raw: object, kind: object) -> object:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)  # type: ignore[call-overload]
        if kind_name == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: expected a number, got {raw!r}") from None
    if name in LIST_SETTINGS and isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise ConfigError(f"setting {name}: expected a list of text, got {raw!r}")
        return ", ".join(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"setting {name}: expected text, got {raw!r}")
    return raw


def validate(settings: Settings) -> None:
    """Reject settings that could only fail later, naming the setting."""
    db = urlsplit(settings.database_url).scheme
    if not (db.startswith("sqlite") or db.startswith("postgresql")):
        raise ConfigError(
            f"setting database_url: unsupported database {redact_url(settings.database_url)!r} "
            "(use sqlite:///path or postgresql+psycopg://...)"
        )
    broker = urlsplit(settings.broker_url).scheme
    if broker not in {"redis", "rediss", "sqla+sqlite", "sqla+postgresql", "memory", "filesystem"}:
        raise ConfigError(
            f"setting broker_url: unsupported broker {redact_url(settings.broker_url)!r}"
        )
    parse_mail_url(settings.mail_url)
    base = urlsplit(settings.base_url)
    if base.scheme not in {"http", "https"} or not base.netloc:
        raise ConfigError(
            "setting base_url: expected http(s)://host[:port], "
            f"got {redact_url(settings.base_url)!r}"
        )
    positive = (
        "tick_seconds",
        "batch_size",
        "send_batch_size",
        "requeue_after_seconds",
        "send_lease_seconds",
        "max_attempts",
        "retry_base_seconds",
        "retry_max_seconds",
        "smtp_timeout_seconds",
        "reflection_max_chars",
        "circle_small_cohort",
        "relay_retry_seconds",
        "worker_stale_seconds",
        "inbound_max_per_subscriber_per_day",
        "inbound_max_per_hour",
        "inbound_max_bytes",
        "bounce_soft_failures",
        "bounce_soft_window_days",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"setting {name}: must be greater than 0")
    if settings.inbound_max_notices_per_subscriber_per_day < 0:
        raise ConfigError(
            "setting inbound_max_notices_per_subscriber_per_day: must be 0 (never ask) or more"
        )
    if not 0 <= settings.bounce_soft_days <= settings.bounce_soft_window_days:
        raise ConfigError(
            "setting bounce_soft_days: must be 0 or more and no more than bounce_soft_window_days"
        )
    if settings.reflect_max_age_days < 0:
        raise ConfigError("setting reflect_max_age_days: must be 0 (never expire) or more")
    if not 1 <= settings.web_port <= 65535:
        raise ConfigError(f"setting web_port: {settings.web_port} is not a TCP port")
    if not 1 <= settings.inbound_port <= 65535:
        raise ConfigError(f"setting inbound_port: {settings.inbound_port} is not a TCP port")
    whole_send = worst_case_send_seconds(settings.mail_url, settings.smtp_timeout_seconds)
    if settings.send_lease_seconds <= max(whole_send, settings.smtp_timeout_seconds):
        # A worker still waiting on a slow server would see its delivery sent by another.
        # Every reply of a send may take up to smtp_timeout_seconds, so the lease must cover
        # all of them, not one.
        raise ConfigError(
            "setting send_lease_seconds: must be longer than a whole send can take "
            f"({settings.send_lease_seconds} <= {whole_send:g}: every one of the SMTP replies "
            f"may take smtp_timeout_seconds = {settings.smtp_timeout_seconds:g}); "
            "raise send_lease_seconds or lower smtp_timeout_seconds"
        )
    if settings.retry_hours <= 0:
        raise ConfigError("setting retry_hours: must be greater than 0")
    if settings.secret_key:
        _check_configured_key(settings.secret_key)
    if not settings.secret_key and db.startswith("postgresql"):
        # The embedded fallback (a key made under var/) differs per machine; links signed by
        # a worker on one machine would be refused by the web app on another.
        raise ConfigError(
            "setting secret_key: required with PostgreSQL, where workers and the web app run "
            "on several machines and must sign links with one key; set DRIPCOURSE_SECRET_KEY"
        )

    if settings.feedback_id and not _FEEDBACK_ID.fullmatch(settings.feedback_id):
        raise ConfigError(
            "setting feedback_id: use up to 120 letters, digits and . _ - : (for example "
            f"'lessons:programme:dripcourse'), not {settings.feedback_id!r}"
        )
    for address in settings.staff_addresses:
        try:
            check_address(address)
        except ValueError as exc:
            raise ConfigError(f"setting staff_emails: {exc}") from None
    if settings.team_contact:
        try:
            check_address(settings.team_contact)
        except ValueError as exc:
            raise ConfigError(f"setting team_contact: {exc}") from None
    if not settings.team_name.strip() or any(c in settings.team_name for c in "\r\n"):
        raise ConfigError("setting team_name: one line naming the people running the course")
    if settings.worker_stale_seconds <= settings.tick_seconds:
        # A working worker takes a tick every tick_seconds; a shorter limit would cry wolf.
        raise ConfigError(
            "setting worker_stale_seconds: must be longer than tick_seconds "
            f"({settings.worker_stale_seconds} <= {settings.tick_seconds})"
        )
    if settings.reflections_key:
        parse_keys(settings.reflections_key)
    elif db.startswith("postgresql"):
        # Like secret_key: a key made under var/ would differ per machine, and a reflection
        # sealed on one web server could not be opened on another.
        raise ConfigError(
            "setting reflections_key: required with PostgreSQL, where several machines must "
            "seal and open reflections with one key; make one with `dripcourse reflections "
            "new-key` and set DRIPCOURSE_REFLECTIONS_KEY"
        )
    if settings.reply_domain and not _DOMAIN.fullmatch(settings.reply_domain):
        raise ConfigError(
            f"setting reply_domain: {settings.reply_domain!r} is not a domain name "
            "(e.g. reply.course.example.org)"
        )
    if settings.inbound_secret and len(settings.inbound_secret.encode()) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"setting inbound_secret: at least {MIN_SECRET_KEY_BYTES} bytes are needed so reply "
            "addresses cannot be forged (make one with `openssl rand -base64 32`)"
        )
    check_webhooks(settings)
    if settings.reflections_retention_days < 0:
        raise ConfigError("setting reflections_retention_days: must be 0 (keep) or more")
    if settings.report_min_people < 5:
        raise ConfigError(
            "setting report_min_people: must be 5 or more (the report never shows a figure "
            "counted from fewer than 5 people)"
        )
    if settings.rate_limit_per_second < 0:
        raise ConfigError("setting rate_limit_per_second: must be 0 (off) or more")
    if (
        settings.rate_limit_per_second
        and not settings.rate_limit_redis_url
        and urlsplit(settings.broker_url).scheme not in {"redis", "rediss"}
    ):
        raise ConfigError(
            "setting rate_limit_per_second: a global rate limit is shared through Redis; "
            "set rate_limit_redis_url or use a redis:// broker"
        )


def secret_key(settings: Settings, *, wait_seconds: float = 1.0) -> str:
    """Return the signing key; on the embedded set-up, make one once and keep it under var/.

    The key file is published whole (see ``files.write_new``), so processes starting together
    (gunicorn's workers, ``run`` beside ``web``) all read the one key. A file that is empty or
    too short (left by an older version that crashed while writing it) is read again for up to
    ``wait_seconds``, then refused: with a guessable key anyone could forge links.
    """
    if settings.secret_key:
        _check_configured_key(settings.secret_key)
        return settings.secret_key
    key_file = private_dir(settings.path(settings.var_dir)) / "secret_key"
    if not key_file.exists():
        write_new(key_file, secrets.token_urlsafe(48).encode())
    deadline = time.monotonic() + wait_seconds
    while True:
        key = key_file.read_text(encoding="utf-8").strip()
        if len(key.encode()) >= MIN_SECRET_KEY_BYTES:
            return key
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"{key_file}: the secret key is empty or shorter than {MIN_SECRET_KEY_BYTES} "
                "bytes, so links could be forged; delete the file and start again to make a new "
                "one (links in emails already sent then stop working), or set secret_key"
            )
        time.sleep(0.05)


def kept_secret_key(settings: Settings) -> str | None:
    """The signing key when one is set or already kept in var/; None otherwise. Makes nothing."""
    if settings.secret_key:
        return settings.secret_key
    key_file = settings.path(settings.var_dir) / "secret_key"
    return key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else None


def check_existing_secret_key(settings: Settings) -> None:
    """Refuse a signing key that is set or kept in var/ but too short; make nothing.

    For commands that may never sign a link (``check``, ``status``): they must not create
    var/, but a key file that is already there and too short is refused by every command.
    """
    if settings.secret_key:
        return  # checked with the other settings
    key_file = settings.path(settings.var_dir) / "secret_key"
    if key_file.is_file():
        secret_key(settings, wait_seconds=0.2)


def _check_configured_key(key: str) -> None:
    if len(key.encode()) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"setting secret_key: {len(key.encode())} bytes; at least {MIN_SECRET_KEY_BYTES} are "
            "needed so links cannot be forged (make one with `openssl rand -base64 32`)"
        )


def redis_url_for_rate_limit(settings: Settings) -> str | None:
    """The Redis that holds the shared send-rate budget, or None when there is no limit."""
    if not settings.rate_limit_per_second:
        return None
    return settings.rate_limit_redis_url or settings.broker_url
