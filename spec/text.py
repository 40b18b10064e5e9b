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

# scheme:// and what follows it up to white space: a password may hold any other character ('"', "<", "`" too)
# (or scheme:\/\/, as some JSON encoders write it)
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:(?://|\\/\\/))(?P<rest>\S*)")
# where a URL written inline ends: a quote, angle bracket or back tick closing it (then the end or punctuation)
_INLINE_END = re.compile(r"[\"'<>`](?=$|[,;:.)\]}\"'<>`])")
# a host (a name, an IPv4 or a bracketed IPv6 address) and a port, then the end of the authority
_HOST_AFTER_AT = re.compile(r"(?:\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%-]+)(?::[0-9]*)?(?![A-Za-z0-9._~%@:\[\]-])")
_QUOTES = frozenset("\"'`")
_SEPARATORS = _QUOTES | frozenset(",;<>")
_BRACKETED_HOST = re.compile(r"\[[0-9A-Za-z:.%]*\](?::[0-9]*)?")
# query parameters that carry secrets in URLs people paste (presigned S3/GCS links, tokens)
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|signature"
    r"|sig|token|access_token|api_key|apikey|key|password|secret)=)[^&#\s]*"
)
REDACTED = "***"


def _userinfo_end(rest: str) -> int | None:
    """Where the user-info of the URL whose text after ``scheme://`` is ``rest`` ends (the index of its "@"), or None
    when it has none.

    A password may hold "@", "/", ":", "?" or "#" unescaped, so the cut is at the last "@" followed by a host: a
    path holding "@" after such a password is cut too (nothing of the password leaks). User-info is there when the
    authority (up to the first "/", "?" or "#") holds an "@", or holds a ":" and an "@" comes later (a password
    with "/" in it): so ``host:port/path@x`` is cut like ``user:pass/word@host``, which it cannot be told from.
    ``s3://bucket/key@v1`` (no ":" before the "/") holds none."""
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in head and (":" not in head or _BRACKETED_HOST.fullmatch(head)):
        return None
    at = [i for i, char in enumerate(rest) if char == "@"]
    hosts = [i for i in at if _HOST_AFTER_AT.match(rest, i + 1)]
    if hosts:
        return hosts[-1]
    return at[-1] if "@" in head else None


def _runs_on(between: str) -> bool:
    """Whether the text between a URL's apparent inline end and a later "@host" can be the rest of its password: it
    holds nothing that separates the next token of a line (a comma, a semicolon, an angle bracket, a second URL's
    "://", a quote other than one just before the "@"), as ``<a@b/x>,<c@d>`` or a JSON line's next field does."""
    core = between[:-1] if between[-1:] in _QUOTES else between
    return not _SEPARATORS & set(core) and "://" not in core


def _without_userinfo(match: re.Match[str]) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    inline = _INLINE_END.search(rest)
    whole = _userinfo_end(rest)
    end = _userinfo_end(rest[: inline.start()]) if inline else None
    # none in the URL as written inline (up to a closing quote or bracket), or an "@host" further on that only
    # password characters lead to: the password held what looks like the URL's end ("p<)ss", "it's.") and runs on
    if end is None or (whole is not None and whole > inline.start() and _runs_on(rest[inline.start() + 1 : whole])):
        end = whole
    if end is not None:
        rest = REDACTED + rest[end:]
    return scheme + _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, rest)


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***`` (``http://***@host/…``), whatever it
    contains, and secret-bearing query parameters (signatures, tokens, keys) emptied. The one redaction of ftc:
    plans, lineage records, logs, error messages and a library's log lines passed on all go through it.

    >>> redact("View run at http://me:p@ss/w:rd@mlflow.local:5000/#/runs/1")
    'View run at http://***@mlflow.local:5000/#/runs/1'
    """
    if "://" not in text and ":\\/\\/" not in text:
        return text
    return _URL.sub(_without_userinfo, text)


# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or hide text on a terminal
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"  # and the invisible tag characters that spell hidden ASCII
)


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
    if char in named:
        return named[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


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
