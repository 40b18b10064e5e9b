"""Text from outside, made safe for where it goes: one redaction for every URL ftc prints, records or uploads, and
one escape for each place people read (a terminal, Markdown, HTML, a YAML scalar).

Outside text (a checkpoint's record, a plan carried in a checkpoint, data lines, a store listing, a library's log
line) is data: it must not hide a credential's leak, move a terminal's cursor, add a link, or add a key to a card.
Every writer of such text calls one function of this module; nothing else escapes on its own.
"""

from __future__ import annotations

import html
import re

__all__ = ["for_html", "for_markdown", "for_terminal", "redact"]

# scheme://AUTHORITY…: the authority runs to the first character that cannot be in a URL written inline
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s\"'<>`]*)")
# query parameters that carry secrets in URLs people paste (presigned S3/GCS links, tokens)
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|signature"
    r"|sig|token|access_token|api_key|apikey|key|password|secret)=)[^&#\s]*"
)
REDACTED = "***"


def _without_userinfo(match: re.Match[str]) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    port = authority.rpartition(":")[2] if ":" in authority and not authority.endswith("]") else ""
    # user-info is removed whole, whatever it holds: a password may hold "@", "/" or ":" unescaped, so the cut is
    # at the last "@" of the location (a path holding "@" after such a password is cut too: nothing of it leaks)
    if "@" in authority or ("@" in rest and port and not port.isdigit()):
        rest = REDACTED + "@" + rest.rpartition("@")[2]
    return scheme + _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, rest)


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***`` (``http://***@host/…``), whatever it
    contains, and secret-bearing query parameters (signatures, tokens, keys) emptied. The one redaction of ftc:
    plans, lineage records, logs, error messages and a library's log lines passed on all go through it."""
    if "://" not in text:
        return text
    return _URL.sub(_without_userinfo, text)


# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or hide text on a terminal
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
    if char in named:
        return named[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str, *, newlines: bool = False) -> str:
    """``text`` as shown on a terminal or in a log: every control character (escape sequences that clear the screen,
    set a title or make a link, a ``\\r`` that overwrites a line, bidirectional overrides) written as its escape
    (``\\x1b``, ``\\r``, ``\\u202e``). ``newlines``: keep line breaks (a multi-line text shown as lines)."""
    if newlines:
        return "\n".join(_CONTROL.sub(_escaped, line) for line in text.split("\n"))
    return _CONTROL.sub(_escaped, text)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def for_markdown(text: str) -> str:
    """``text`` as literal inline Markdown: no markup, no HTML, no link, on one line (line breaks become spaces,
    control characters their escapes)."""
    one_line = for_terminal(" ".join(text.splitlines()))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def for_html(text: str) -> str:
    """``text`` as literal HTML text or attribute value."""
    return html.escape(for_terminal(text, newlines=True), quote=True)
