"""Settings: embedded defaults, a TOML file, then DRIPCOURSE_* variables; mistakes named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dripcourse.errors import ConfigError
from dripcourse.settings import Settings, load_settings, secret_key
from tests.conftest import ROOT


def test_default_toml_spells_out_exactly_the_built_in_defaults() -> None:
    assert load_settings(ROOT / "config" / "default.toml", environ={}) == Settings()


def test_environment_overrides_the_file() -> None:
    settings = load_settings(
        ROOT / "config" / "default.toml",
        environ={
            "DRIPCOURSE_MAIL_URL": "console://",
            "DRIPCOURSE_TICK_SECONDS": "5",
            "DRIPCOURSE_BASE_URL": "https://lessons.example.org",
        },
    )
    assert settings.mail_url == "console://"
    assert settings.tick_seconds == 5.0
    assert settings.base_url == "https://lessons.example.org"
    assert "DRIPCOURSE_MAIL_URL" in settings.source


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("tick_secs = 5\n", {}, "unknown setting 'tick_secs'"),
        ("tick_seconds = 'soon'\n", {}, "setting tick_seconds: expected a number"),
        ("", {"DRIPCOURSE_DATABASE_URL": "mysql://x"}, "setting database_url: unsupported"),
        ("", {"DRIPCOURSE_BROKER_URL": "amqp://x"}, "setting broker_url: unsupported"),
        ("", {"DRIPCOURSE_MAIL_URL": "smtp://relay:587?tls=on"}, "mail_url: unknown option"),
        (
            "",
            {"DRIPCOURSE_MAIL_URL": "smtp://relay:submission"},
            "mail_url: the port submission is not a number",
        ),
        (
            "",
            {"DRIPCOURSE_MAIL_URL": "smtp://relay:99999"},
            r"the port 99999 is not a TCP port \(1-65535\)",
        ),
        (
            "",
            {"DRIPCOURSE_TICK_SECOND": "5"},
            r"environment: unknown setting DRIPCOURSE_TICK_SECOND "
            r"\(did you mean DRIPCOURSE_TICK_SECONDS\?\)",
        ),
        ("", {"DRIPCOURSE_MAIL_URL": "smtp://:587"}, "mail_url: no host"),
        ("", {"DRIPCOURSE_BASE_URL": "course.example.org"}, "setting base_url"),
        ("", {"DRIPCOURSE_BATCH_SIZE": "0"}, "setting batch_size: must be greater than 0"),
        ("", {"DRIPCOURSE_RATE_LIMIT_PER_SECOND": "10"}, "shared through Redis"),
        ("tick_seconds = \n", {}, "Invalid value"),
        ("", {"DRIPCOURSE_REFLECT_MAX_AGE_DAYS": "-1"}, "reflect_max_age_days: must be 0"),
        ("", {"DRIPCOURSE_WEB_PORT": "80000"}, "web_port: 80000 is not a TCP port"),
        ("", {"DRIPCOURSE_FEEDBACK_ID": "a b\r\nBcc: x@y"}, "setting feedback_id: use up to"),
        ("", {"DRIPCOURSE_SES_TOPIC_ARN": "dripcourse-feedback"}, "ses_topic_arn: .* not an SNS"),
        ("", {"DRIPCOURSE_MAILGUN_WEBHOOK_SIGNING_KEY": "short"}, "mailgun_webhook_signing_key"),
        (
            "",
            {"DRIPCOURSE_SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90IGEga2V5"},
            "sendgrid_webhook_public_key: not an elliptic-curve public key",
        ),
        (
            "",
            {"DRIPCOURSE_POSTMARK_WEBHOOK_USER": "postmark"},
            "postmark_webhook_user: set postmark_webhook_password too",
        ),
        ("", {"DRIPCOURSE_WEBHOOK_MAX_AGE_SECONDS": "5"}, "webhook_max_age_seconds: at least"),
    ],
)
def test_wrong_settings_are_named(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ=env)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_embedded_secret_key_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(var_dir=str(tmp_path / "var"))
    first = secret_key(settings)
    assert len(first) >= 40
    assert secret_key(settings) == first
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
    configured = "from-the-environment-and-32-bytes-long"
    assert secret_key(Settings(secret_key=configured, var_dir=str(tmp_path / "var"))) == configured


def test_celery_worker_with_a_wrong_setting_stops_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DRIPCOURSE_MAIL_URL": "pigeon://loft",
        "DRIPCOURSE_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "dripcourse.tasks", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "dripcourse: setting mail_url: unsupported transport 'pigeon://loft'" in done.stderr
    assert "Traceback" not in done.stderr
