"""The newly written text of a reply: no quoted lesson, no reply header, no signature.

The trimming is done by mail-parser-reply, picked by measurement over the other maintained
parsers on our fixtures (docs/inbound.md, benchmarks/reply_parsers.py); two small steps of
our own cover what it misses: the text of HTML-only replies, and a quote introduced by a
reply header in a spelling it does not know.
"""

from __future__ import annotations

import re
from email.message import EmailMessage

import lxml.etree
import lxml.html
from mailparser_reply import EmailReplyParser

# The reply-header languages the parser looks for, beside English (which it always adds).
REPLY_LANGUAGES = ["en", "de", "es", "fr", "it", "nl", "pt"]


def reply_text(msg: EmailMessage) -> str:
    """The newly written text of a reply: the text part (or the HTML part when there is no
    text), without the quoted lesson, the reply header and the signature."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    assert isinstance(part, EmailMessage)
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        content = part.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
    if part.get_content_subtype() == "html":
        content = html_to_text(content)
    return strip_reply(content)


def strip_reply(text: str) -> str:
    """Remove quoted history and signatures from a reply's text (see docs/inbound.md)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    replies = EmailReplyParser(languages=REPLY_LANGUAGES).read(text).replies
    body = replies[0].body if replies else text
    return _drop_trailing_quote(body).strip()


# A line that introduces a quote ("On ... wrote:", "El ... escribió:", "Am ... schrieb ...:"),
# whatever its language: it ends with a colon and only quoted lines follow it.
_QUOTED = re.compile(r"^\s*>")


def _drop_trailing_quote(text: str) -> str:
    """Cut a quoted block at the end together with the line introducing it.

    The parser knows the reply headers of the languages it was given, each in a few
    spellings; a header it misses leaves the whole quote behind. A block of ``>`` lines that
    runs to the end, after a line ending in a colon, is quoted history in any language.
    """
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end and (_QUOTED.match(lines[end - 1]) or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines) or not end:
        return text
    if lines[end - 1].rstrip().endswith(":"):
        return "\n".join(lines[: end - 1])
    return text


_DROPPED_HTML = (
    "//blockquote | //*[contains(@class, 'gmail_quote')] | //*[@id='divRplyFwdMsg']"
    " | //*[@id='appendonsend']/following-sibling::* | //head | //style | //script"
)
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}


def html_to_text(html: str) -> str:
    """The visible text of an HTML reply, without the quote a client put below it."""
    try:
        root = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return ""
    for node in root.xpath(_DROPPED_HTML):
        if node.getparent() is not None:
            node.drop_tree()
    for node in root.iter():
        if isinstance(node.tag, str) and node.tag in _BLOCKS:
            node.tail = "\n" + (node.tail or "")
            if node.tag in ("p", "div") or node.tag.startswith("h"):
                node.tail = "\n" + node.tail
    text = root.text_content()
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
