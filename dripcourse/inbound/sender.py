"""Who sent an inbound reply: the one address of its From header, and whether the MTA in
front found that address's domain authentic (its Authentication-Results header).

Apart from the routing step because neither reads the database: each answers from the
message's headers alone, and both err on the side of "no".
"""

from __future__ import annotations

import re
from email.message import EmailMessage

import authres


def from_address(msg: EmailMessage) -> str | None:
    """The one address of the From header; None when there are several, none, or the parser
    found defects in it: a header such as ``ana@x <evil@y>`` or ``<ana@x>@evil`` must never
    be read as ana's."""
    headers = msg.get_all("From", [])
    if len(headers) != 1:
        return None
    header = headers[0]
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1 or getattr(header, "defects", ()) or not addresses[0].addr_spec:
        return None
    address = addresses[0].addr_spec
    return address if "@" in address and not address.startswith('"') else None


def authenticated(msg: EmailMessage, authserv_id: str) -> bool:
    """Whether the MTA named ``authserv_id`` found the From domain authentic.

    Only the topmost Authentication-Results header carrying that id is read: the MTA in
    front adds its own above everything the sender wrote (and should remove any older one
    with its id). It must show ``dmarc=pass`` for the From domain, or ``dkim=pass`` or
    ``spf=pass`` for that domain or a parent of it (aligned), and no ``dmarc=fail`` for it:
    the domain's own verdict is not outweighed by a pass that only looks aligned
    (``dmarc=none``, a domain without a policy, is no verdict). Anything unreadable is a
    no, and so is a topmost header with that id that the library cannot read: the MTA
    writes the sender's HELO name and envelope into its own, so a sender may make it
    unreadable, and the one below it may be the sender's.
    """
    sender = from_address(msg)
    if sender is None:
        return False
    domain = sender.rpartition("@")[2].lower()
    for name, value in msg.raw_items():
        if name.lower() != "authentication-results":
            continue
        text = " ".join(str(value).split())
        # Told apart by their id before the library reads them (0.3 ms each, and a message
        # may carry thousands): only the topmost with the MTA's id is read at all.
        found = _AUTHSERV_ID.match(text)
        if not found or found.group(1).strip('"').lower() != authserv_id.lower():
            continue
        try:
            header = authres.AuthenticationResultsHeader.parse_value(text)
        except Exception:  # noqa: BLE001 - the library raises its own errors and others
            return False  # the MTA's own, unreadable: no pass can be read from it
        if str(header.authserv_id).lower() != authserv_id.lower():
            return False  # read otherwise by the library than by its first word: doubtful
        verdicts = {
            str(r.result).lower()
            for r in header.results
            if str(r.method).lower() == "dmarc" and _about(r, domain)
        }
        if "fail" in verdicts:
            return False  # the domain's own policy says no, whatever else passed
        return any(_passes(result, domain) for result in header.results)
    return False


# The authserv-id of a header the library cannot read: its first word, after any comments.
_AUTHSERV_ID = re.compile(r"\s*(?:\([^()]*\)\s*)*([^\s;()]+)")


def _about(result: authres.AuthenticationResult, domain: str) -> bool:
    """Whether a DMARC result names the From domain (or names none, so must mean it)."""
    values = [
        str(p.value).lower().strip(".")
        for p in result.properties
        if (str(p.type).lower(), str(p.name).lower()) == ("header", "from")
    ]
    return not values or domain in values


_AUTHENTICATES = {"dmarc": ("header", "from"), "dkim": ("header", "d"), "spf": ("smtp", "mailfrom")}


def _passes(result: authres.AuthenticationResult, domain: str) -> bool:
    method = str(result.method).lower()
    if method not in _AUTHENTICATES or str(result.result).lower() != "pass":
        return False
    kind, name = _AUTHENTICATES[method]
    for prop in result.properties:
        if (str(prop.type).lower(), str(prop.name).lower()) != (kind, name):
            continue
        found = str(prop.value).rpartition("@")[2].lower().strip(".")
        if method == "dmarc":
            return found == domain
        # A parent aligns (relaxed), but never a bare top-level domain.
        return domain == found or ("." in found and domain.endswith("." + found))
    return False
