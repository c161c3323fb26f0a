"""A small IMAP server for tests: the few commands `inbound poll` uses, over plain TCP.

Holds folders of messages in memory; records every command so a test can see what was done.
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Stored:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class Mailstore:
    user: str = "inbound@course.example.org"
    password: str = "secret words"
    folders: dict[str, list[Stored]] = field(default_factory=lambda: {"INBOX": [], "Done": []})
    commands: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Messages the server will not hand out or copy (a large provider answers NO to both for
    # a message it cannot read back).
    broken: set[int] = field(default_factory=set)
    _next_uid: int = 1

    def deliver(self, raw: bytes, folder: str = "INBOX", seen: bool = False) -> int:
        with self.lock:
            uid, self._next_uid = self._next_uid, self._next_uid + 1
            self.folders[folder].append(Stored(uid, raw, {"\\Seen"} if seen else set()))
            return uid


def _words(line: str) -> list[str]:
    return [a or b for a, b in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', line)]


class _Handler(socketserver.StreamRequestHandler):
    store: Mailstore

    def send(self, text: str | bytes) -> None:
        self.wfile.write(text if isinstance(text, bytes) else text.encode())

    def handle(self) -> None:
        store = self.server.store  # type: ignore[attr-defined]
        selected: str | None = None
        self.send("* OK fake IMAP4rev1 ready\r\n")
        for line in self.rfile:
            text = line.decode().rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            with store.lock:
                store.commands.append(
                    rest.split(" ")[0].upper()
                    + (" " + rest.split(" ")[1].upper() if rest.upper().startswith("UID ") else "")
                )
            words = _words(rest)
            command = words[0].upper()
            if command == "CAPABILITY":
                self.send(f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n")
            elif command == "LOGIN":
                ok = words[1:3] == [store.user, store.password]
                self.send(f"{tag} OK logged in\r\n" if ok else f"{tag} NO wrong password\r\n")
            elif command == "SELECT":
                selected = words[1]
                if selected not in store.folders:
                    self.send(f"{tag} NO no such folder\r\n")
                    continue
                n = len(store.folders[selected])
                self.send(
                    f"* {n} EXISTS\r\n* FLAGS (\\Seen \\Deleted)\r\n"
                    f"{tag} OK [READ-WRITE] selected\r\n"
                )
            elif command == "UID" and selected is not None:
                self.uid(store, selected, tag, words[1].upper(), words[2:])
            elif command == "EXPUNGE" and selected is not None:
                with store.lock:
                    store.folders[selected] = [
                        m for m in store.folders[selected] if "\\Deleted" not in m.flags
                    ]
                self.send(f"{tag} OK expunged\r\n")
            elif command == "LOGOUT":
                self.send(f"* BYE\r\n{tag} OK bye\r\n")
                return
            else:
                self.send(f"{tag} BAD unknown command\r\n")

    def uid(self, store: Mailstore, folder: str, tag: str, verb: str, args: list[str]) -> None:
        messages = {m.uid: m for m in store.folders[folder]}
        if verb == "SEARCH":
            uids = " ".join(str(u) for u, m in messages.items() if "\\Seen" not in m.flags)
            self.send(f"* SEARCH {uids}\r\n{tag} OK searched\r\n".replace("SEARCH \r", "SEARCH\r"))
        elif verb in ("FETCH", "COPY") and int(args[0]) in store.broken:
            self.send(f"{tag} NO Some messages could not be {verb}ed (Failure)\r\n")
        elif verb == "FETCH":
            m = messages[int(args[0])]
            seq = store.folders[folder].index(m) + 1
            self.send(
                f"* {seq} FETCH (UID {m.uid} BODY[] {{{len(m.raw)}}}\r\n".encode()
                + m.raw
                + b")\r\n"
            )
            self.send(f"{tag} OK fetched\r\n")
        elif verb == "COPY":
            m = messages[int(args[0])]
            with store.lock:
                store.folders.setdefault(args[1], []).append(Stored(m.uid, m.raw, set(m.flags)))
            self.send(f"{tag} OK copied\r\n")
        elif verb == "STORE":
            m = messages[int(args[0])]
            m.flags.update(args[2].strip("()").split())
            self.send(f"{tag} OK stored\r\n")
        else:
            self.send(f"{tag} BAD unknown UID command\r\n")


class IMAPServer:
    """``with IMAPServer() as server:`` listens on 127.0.0.1:server.port."""

    def __init__(self, store: Mailstore | None = None) -> None:
        self.store = store or Mailstore()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.store = self.store  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]

    def url(self, folder: str = "INBOX") -> str:
        user = self.store.user.replace("@", "%40")
        password = self.store.password.replace(" ", "%20")
        return f"imap://{user}:{password}@127.0.0.1:{self.port}/{folder}"

    def __enter__(self) -> IMAPServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
