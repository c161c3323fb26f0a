"""The reason a bounce gives, as a family: from the words of the diagnostic and the status.

Receiving servers word their refusals freely and code them loosely (a generic ``5.0.0``
over "550 5.1.1 user unknown", ``5.7.1`` for a missing mailbox, ``5.1.10`` meaning "not
found" at one provider and "null MX" in the RFC). So the most specific enhanced status in
the report or its text is taken, a few codes are trusted outright, and otherwise the
diagnostic's words decide, tried from the most specific family to the least. Every pattern
is bounded (no unbounded ``.*``), so a hostile text costs linear time.
"""

from __future__ import annotations

import re
from enum import StrEnum

MAX_TEXT = 32_000  # characters of report text read; a real explanation is a few hundred


class Family(StrEnum):
    """Why a message was not delivered, in the words the rules use."""

    USER_UNKNOWN = "user unknown"
    HOST_UNKNOWN = "host unknown"
    MAILBOX_FULL = "mailbox full"
    MAILBOX_DISABLED = "mailbox disabled"
    TOO_LARGE = "message too large"
    POLICY = "content or policy block"
    OUR_SENDER = "our sender or authentication"
    EXPIRED = "expired"
    SYSTEM_ERROR = "system error"
    OTHER = "other"


_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def best_status(field: str, words: str) -> str:
    """The report's Status, unless the text carries a more specific code (a 5.0.0 hiding
    ``550 5.1.1``); the status class of the report stays the report's when it gave one."""
    found = _STATUS.search(field)
    status = found.group(0) if found else ""
    for match in _STATUS.finditer(words[:MAX_TEXT]):
        if match.group(1) == "2":
            continue
        code = match.group(0)
        if not status or status.split(".")[1:] == ["0", "0"]:
            klass = status[:1] if status else code[:1]
            return f"{klass}{code[1:]}" if status else code
    return status


def action_of(field: str, status: str, text: str) -> str:
    if field.startswith(("failed", "delivered", "relayed", "expanded")):
        return "failed" if field.startswith("failed") else "delivered"
    if field.startswith("delayed"):
        return "delayed"
    if status.startswith("5"):
        return "failed"
    if status.startswith("2"):
        return "delivered"
    if _DELAYED.search(text) and not _GAVE_UP.search(text):
        return "delayed"
    return "failed"


_DELAYED = re.compile(
    r"will (continue|keep) (to )?try|not yet been delivered|delivery (is|has been) delayed"
    r"|will be retried|still trying|warning: message .{0,200} delayed|delayed mail",
    re.IGNORECASE,
)
_GAVE_UP = re.compile(
    r"permanent(ly)? (error|fail)|given up|giving up|gave up|could not be delivered"
    r"|unable to deliver|failed permanently|not be retried",
    re.IGNORECASE,
)


# The words of diagnostics, by family, in the order they are tried: the most specific
# first, so "sender address rejected: user unknown" is about our sender.
_WORDS: list[tuple[Family, str]] = [
    (
        Family.SYSTEM_ERROR,  # before the status: these name the fault whatever the code
        r"does not support tls|hop count exceeded|too many hops|mail loop|routing loop"
        r"|unable to contact ldap|duplicated message-id|service refused, please try later"
        r"|pipe to \|",
    ),
    (Family.POLICY, r"my name was rejected|mismatches client ip"),
    (
        Family.OUR_SENDER,
        r"sender (address )?(rejected|refused|denied|verify failed|domain)"
        r"|(sender|from|envelope) (address|domain) (does not exist|not found|must exist|is invalid)"
        r"|domain of sender address .{0,200} does not (exist|resolve)"
        r"|sender .{0,200} not (allowed|permitted)"
        r"|unauthenticated (email|mail|sender)|authenticat(ion|ed) (is )?(required|failed)"
        r"|spf (check )?(fail|softfail|violation)|dmarc|dkim .{0,200}fail|failed (spf|dkim)"
        r"|relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay"
        r"|not allowed to relay|we do not relay|relay not permitted"
        r"|tls (is )?required|must issue a starttls|encryption required|access denied\W{1,5}sender"
        r"|message has been rejected as mail server .{0,200}rejected|sender was rejected"
        r"|mail relay|without authentication|>\.\.\. access denied"
        r"|purported responsible address|sender id|spf record|not a member of"
        r"|groups\.google\.com|google groups|you (may not|do not) have permission to post",
    ),
    (
        Family.MAILBOX_FULL,
        r"mailbox (is )?full|over ?quota|quota (exceeded|exceed)|exceed(ed|s)? (the |his |her )?"
        r"(storage|quota|mailbox)|mail ?box (size|storage) limit|insufficient (disk|storage)"
        r"|out of (disk|storage) space|user is over|mailfolder is full|too many messages"
        r"|no space left|boite pleine|postfach voll|mailbox has exceeded|full mailbox"
        r"|not enough (disk )?space|user has exhausted|storage limit|maildir over quota"
        r"|recipient.s (mailbox|inbox) is full|disk quota"
        r"|mailbox exceed|as their mailbox is full|mailbox size limit",
    ),
    (
        Family.TOO_LARGE,
        r"message (size )?(is )?(too (big|large)|exceeds|larger than)|size (limit|exceeds)"
        r"|exceeds? (the )?(maximum|max)( message)? size|message length exceeds"
        r"|mail size|too large for|maximum message size",
    ),
    (
        Family.MAILBOX_DISABLED,
        r"(account|mailbox|user) (is )?(disabled|suspended|inactive|deactivated|locked|frozen"
        r"|blocked)"
        r"|account that you tried to reach is (disabled|inactive)|disabled recipient"
        r"|(disabled|suspended|inactive|deactivated) (account|mailbox|user)"
        r"|mailbox (is )?(currently )?not active|account has been disabled|\btemporar\w* locked"
        r"|not accepting (any )?(new )?mail|temporarily (disabled|deactivated)",
    ),
    (
        Family.HOST_UNKNOWN,
        r"host (or domain name )?(not found|unknown)|unknown host|domain (not found|name not found"
        r"|does not exist|is not valid|unknown)|name (service|server) error|no (mx|a) record"
        r"|nxdomain|unrouteable|unroutable|no such (domain|host)|dns (lookup|error)"
        r"|mx (record )?(lookup|not found)|couldn'?t find any host|unknown domain"
        r"|host name lookup fail|all relevant mx records point to non-existent"
        r"|does not accept mail|null mx|domain .{0,200} does not accept|no mail hosts for domain"
        r"|isn'?t a valid domain|domain name lookup|non-existent (host|domain)"
        r"|account or domain may not exist|domain is not reachable|indicated no smtp service",
    ),
    (
        Family.USER_UNKNOWN,
        r"user(name)? (is )?(unknown|not found|doesn'?t exist|does not exist|not exist|invalid)"
        r"|unknown (user|recipient|local[- ]part|address|mailbox|account)|no such (user|recipient"
        r"|mailbox|address|account|person)|(recipient|mailbox|address|account) (does not exist"
        r"|doesn'?t exist|not found|unknown|unavailable|invalid|rejected|not valid)"
        r"|invalid (recipient|mailbox|address|user)|not (a )?valid (recipient|user|mailbox)"
        r"|mailbox not (found|available)|user not (local|listed)|not our customer"
        r"|recipient (address )?rejected|address rejected|bad destination mailbox"
        r"|addressee unknown|no mailbox|is not a known user|no longer (active|available|valid)"
        r"|has been disabled|no longer with|not listed in|does not have an account"
        r"|recipient not found|mailbox name not allowed|undeliverable address"
        r"|the recipient name is not recognized|unknown recipient|no valid recipients"
        r"|user doesn.t have a .{0,200} account"
        r"|the email account that you tried to reach does not exist"
        r"|the group you tried to contact .{0,200} may not exist|moved away|has moved"
        r"|存在しない|aucun utilisateur|utilisateur inconnu|benutzer unbekannt|unbekannt"
        r"|не существует|нет такого|usuario (desconocido|no existe)"
        r"|見つかりません|リストにありません|invalid (final delivery )?userid|address wasn.t found"
        r"|mailbox unavailable",
    ),
    (
        Family.EXPIRED,
        r"retry time(out)? (not reached|exceeded)|too long in (the )?queue|in the queue too long"
        r"|message expired|delivery (time|attempts) (expired|exceeded)"
        r"|time(d)? out .{0,200}(deliver|queue)"
        r"|could not be delivered (within|for) \d+|has not been delivered for|message timeout"
        r"|expired after|giving up on|deferred for too long|maximum time|retry timeout"
        r"|unable to deliver .{0,200} for \d+ (days|hours)|queue expired|lifetime exceeded"
        r"|could not deliver for the last|not delivered within|envelope expired"
        r"|delivery failed \d+ attempts|will be retried for|aborted after|after multiple retries",
    ),
    (
        Family.POLICY,
        r"spam|blocked|blacklist|block ?list|denylist|reputation|rejected (by|due to) (policy"
        r"|content)|policy|prohibited|not allowed|refused|virus|malware|content (rejected"
        r"|filter)|filtered|banned|reverse dns|rdns|ptr record|rbl|listed (at|in|on)"
        r"|too many (connections|recipients|messages)|rate limit|throttl|try again later"
        r"|message (was )?rejected|administrative prohibition|access denied|not authorized"
        r"|unsolicited|bulk mail|suspicious|greylist|not permitted|rejected for"
        r"|mail rejected|was rejected by|unwanted messages|mismatches client ip",
    ),
    (
        Family.SYSTEM_ERROR,
        r"system (error|failure|full)|internal (server )?error|local error|mailer error"
        r"|connection (refused|reset|timed out|lost|closed)|timed? ?out|network (error|unreachable)"
        r"|service (is )?(currently )?unavailable|not reachable"
        r"|unable to connect|could not connect|routing loop|mail loop|too many hops"
        r"|loops back|i/o error|temporar(y|ily) (failure|unavailable|error)|service unavailable"
        r"|resources|conversation with .{0,200} (failed|timed out)|command (failed|died)"
        r"|unexpected|broken pipe|pipe to (program|\|)|lost connection|unable to (process|open)"
        r"|duplicated message-id",
    ),
]
_WORD_PATTERNS = [(family, re.compile(words, re.IGNORECASE)) for family, words in _WORDS]
_FIRST = _WORD_PATTERNS[0][1]


def family_of(diagnostic: str, text: str, status: str, action: str) -> Family:
    """Name the reason: a specific enhanced status first where it is unambiguous, then the
    words of the diagnostic, then those of the whole explanation, then the status; a
    refusal of our envelope sender is about us whatever words it borrows."""
    family = _family_of(diagnostic, text, status, action)
    if family == Family.POLICY and _ACCESS_DENIED.search(diagnostic or text):
        return Family.OUR_SENDER
    return family


# "Access denied" alone is what Sendmail-like servers say to a sender they refuse; a banned
# IP or a block list says why, and stays a policy block.
_ACCESS_DENIED = re.compile(
    r"access denied(?![ ,.;:]{1,3}(banned|blocked|listed|blacklisted))", re.IGNORECASE
)


def _family_of(diagnostic: str, text: str, status: str, action: str) -> Family:
    if _ON_HOLD.search(diagnostic or text):
        return Family.OTHER  # the mailbox exists and is held: neither gone nor about us
    by_code = _by_status(status)
    if by_code is not None and by_code in _SURE_CODES:
        return by_code
    temporary = not status.startswith("5")
    for words in (diagnostic, text) if diagnostic else (text,):
        for family, pattern in _WORD_PATTERNS:
            if not pattern.search(words):
                continue
            if family == Family.SYSTEM_ERROR and temporary and _GAVE_UP_RETRYING.search(words):
                return Family.EXPIRED  # the server tried for days and could never connect
            if family == Family.SYSTEM_ERROR and by_code is not None and pattern is not _FIRST:
                return by_code
            if family == Family.HOST_UNKNOWN and status.startswith("4"):
                return Family.SYSTEM_ERROR  # a lookup that failed for now proves nothing
            if (
                family == Family.USER_UNKNOWN
                and _AFTER_DATA.search(text)
                and not _AT_RCPT.search(text)
                and status.split(".")[1:] != ["1", "1"]
                and not re.search(r"doesn.t have an? \S+ account", words)
            ):
                # The address was accepted at RCPT TO; a refusal of the content that
                # borrows "unknown user" is a filter's verdict, not a missing mailbox.
                return Family.POLICY
            return family
    if by_code is not None:
        return by_code
    if action == "delayed" or (action == "failed" and status.startswith("4")):
        return Family.EXPIRED
    return Family.OTHER


_AFTER_DATA = re.compile(
    r">>> DATA|after (end of )?data|in reply to end of data|our final data|for text command"
    r"|smtp command\s*\|?\s*\n?\s*data\b|command\s*:\s*data\b"
    # qmail names the stage in its own words: after the message, or at DATA.
    r"|failed after i sent the message|failed on data command",
    re.IGNORECASE,
)

_ON_HOLD = re.compile(
    r"(recipient|address|mailbox|account)( address)? (rejected|is)\W{0,3}on hold", re.IGNORECASE
)
_AT_RCPT = re.compile(
    r">>> RCPT|after RCPT|in reply to RCPT|RCPT TO:?\s*<|does not like recipient", re.IGNORECASE
)
_GAVE_UP_RETRYING = re.compile(
    r"connection timed out|connect to .{0,200} timed out|host not reachable"
    r"|remote host is not responding|could not connect|unable to connect|no route to host"
    r"|connection refused|not reachable",
    re.IGNORECASE,
)

_SURE_CODES = {Family.HOST_UNKNOWN, Family.MAILBOX_FULL, Family.TOO_LARGE, Family.OUR_SENDER}

_BY_STATUS = {
    "1.1": Family.USER_UNKNOWN,
    "1.6": Family.USER_UNKNOWN,
    "1.3": Family.USER_UNKNOWN,
    "1.2": Family.HOST_UNKNOWN,
    "1.10": Family.USER_UNKNOWN,  # Microsoft's "recipient not found"; a null MX says so
    "4.4": Family.HOST_UNKNOWN,
    "1.7": Family.OUR_SENDER,
    "1.8": Family.OUR_SENDER,
    "2.1": Family.MAILBOX_DISABLED,
    "2.2": Family.MAILBOX_FULL,
    "2.3": Family.TOO_LARGE,
    "3.4": Family.TOO_LARGE,
    "4.7": Family.EXPIRED,
    "7.1": Family.POLICY,
    "7.0": Family.POLICY,
    "7.25": Family.POLICY,
    "7.5": Family.OUR_SENDER,
    "7.7": Family.OUR_SENDER,
    "7.8": Family.OUR_SENDER,
    "7.23": Family.OUR_SENDER,
    "7.24": Family.OUR_SENDER,
    "7.26": Family.OUR_SENDER,
    "7.27": Family.OUR_SENDER,
}


def _by_status(status: str) -> Family | None:
    if not status:
        return None
    _klass, subject, detail = status.split(".")
    exact = _BY_STATUS.get(f"{subject}.{detail}")
    if exact is not None:
        return exact
    if subject == "7":
        return Family.POLICY
    if subject == "6":
        return Family.POLICY
    if subject in ("3", "4", "5") and detail != "0":
        return Family.SYSTEM_ERROR
    return None
