"""ftc.spec.text: the one redaction of URLs and the escapes of outside text for terminals, Markdown and HTML."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ftc.spec.text import for_html, for_markdown, for_terminal, redact

# --- redact: user-info removed whole, whatever it holds


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:SECRET@host:5000/x", "http://***@host:5000/x"),
        ("http://user:p@ss@host/x", "http://***@host/x"),  # "@" in the password: not half-redacted
        ("http://user:p@ss@w@rd@host", "http://***@host"),
        ("http://user:pa/ss@host/x", "http://***@host/x"),  # "/" in the password
        ("http://user:12/34@host", "http://***@host"),  # "/" after digits: not taken for a port
        ("http://user:pa:ss@host:9000", "http://***@host:9000"),  # ":" in the password
        ("http://user:p%40ss@host", "http://***@host"),  # an escaped "@"
        ("http://user:pa?ss@host/x", "http://***@host/x"),
        ("http://user:pa#ss@host/x", "http://***@host/x"),
        ('http://user:pa"ss@host', "http://***@host"),  # a quote in the password does not end the URL
        ("http://user:pa'ss@host", "http://***@host"),
        ("http://user:pa<ss>@host", "http://***@host"),
        ("http://TOKEN@github.com/org/repo.git", "http://***@github.com/org/repo.git"),
        ("https://user:pw@[::1]:8443/api", "https://***@[::1]:8443/api"),  # IPv6 host
        ("https://user:pw@[fe80::1%25eth0]/", "https://***@[fe80::1%25eth0]/"),
        ("postgresql+psycopg2://u:pw@db/mlflow", "postgresql+psycopg2://***@db/mlflow"),
        ("HTTP://U:PW@HOST", "HTTP://***@HOST"),
    ],
)
def test_redact_removes_the_whole_userinfo_whatever_the_password_holds(url: str, expected: str):
    assert redact(url) == expected


def test_redact_handles_several_urls_in_one_line():
    line = "copy http://a:s1@one/x to s3://bucket/k and https://b:s2@two:8080/y, then (http://c:s3@three)."
    assert redact(line) == "copy http://***@one/x to s3://bucket/k and https://***@two:8080/y, then (http://***@three)."
    assert not any(secret in redact(line) for secret in ("s1", "s2", "s3@"))


def test_redact_sees_urls_whose_slashes_a_json_encoder_escaped():
    assert redact('{"uri": "http:\\/\\/u:pw@host:5000\\/api"}') == '{"uri": "http:\\/\\/***@host:5000\\/api"}'


def test_redact_keeps_text_around_quoted_urls():
    assert redact("['http://u:pw@host', 'x@y']") == "['http://***@host', 'x@y']"
    assert redact('{"url":"http://u:pw@host","email":"a@b"}') == '{"url":"http://***@host","email":"a@b"}'
    assert redact("<http://u:pw@host>") == "<http://***@host>"


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2F2026&x=1",
        "https://storage.googleapis.com/b/o?X-Goog-Signature=abc123",
        "http://host/api?token=abc123",
        "http://host/api?a=1&api_key=abc123#frag",
        "http://host/api?PASSWORD=abc123",
    ],
)
def test_redact_empties_secret_query_parameters(url: str):
    assert "abc123" not in redact(url)
    assert "AKIA" not in redact(url)
    assert "=***" in redact(url)


def test_redact_keeps_other_query_parameters():
    assert redact("http://host/api?a=1&keyword=x&monkey=y") == "http://host/api?a=1&keyword=x&monkey=y"


@pytest.mark.parametrize(
    "text",
    [
        "http://host:5000/#/experiments/1/runs/abc",
        "https://[::1]:8080/a",
        "s3://bucket/key@v1",  # "@" in an object key, no credential
        "s3://bucket/a/b@2026-12-07/c.json",
        "gs://bucket/folder/x@y.txt",
        "http://host/users/@me",
        "user@example.com wrote http://host/x",
        "no url here: user:pw@host",
        "file:///tmp/a b",
        "",
    ],
)
def test_redact_leaves_urls_without_a_credential_unchanged(text: str):
    assert redact(text) == text


def test_a_port_followed_by_a_path_with_at_is_cut_as_if_it_held_a_password():
    # host:port/path@x cannot be told from user:pass/word@host: the redaction errs on the side of the secret
    assert redact("http://registry:443/@scope/pkg") == "http://***@scope/pkg"


@pytest.mark.parametrize("around", ["{}", "'{}'", "<{}>"])
def test_a_password_holding_what_looks_like_an_inline_urls_end_is_still_cut(around):
    # "<)" reads as the end of a URL written inline; an "@host" further on that only password characters lead to
    # is where it ends
    assert redact(around.format("http://0:@0<)@host")) == around.format("http://***@host")
    assert redact("'http://u:@x<)'@host'") == "'http://***@host'"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("<http://git@github.com/x>,<bob@example.com>", "<http://***@github.com/x>,<bob@example.com>"),
        ("[a](<http://u@h1/a>),[b](<http://h2/@scope/pkg>)", "[a](<http://***@h1/a>),[b](<http://h2/@scope/pkg>)"),
        ("('http://u@h1/x',bob@h2)", "('http://***@h1/x',bob@h2)"),
        (
            "see <https://ci@mirror.internal/repo>;mail:ops@example.com",
            "see <https://***@mirror.internal/repo>;mail:ops@example.com",
        ),
        ('{"url":"http://u:p@host","email":"a@b"}', '{"url":"http://***@host","email":"a@b"}'),
    ],
)
def test_the_next_token_of_a_line_after_an_inline_url_is_left_alone(text, redacted):
    assert redact(text) == redacted


_USER = st.text(alphabet=string.ascii_letters + string.digits + "._-+!$", min_size=1, max_size=12)
_PASSWORD = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=4, max_size=24
)
_HOST = st.sampled_from(["host", "mlflow.example.com", "127.0.0.1:5000", "[::1]:8080", "minio:9000"])
_TAIL = st.sampled_from(["", "/", "/api/2.0", "/#/experiments/1/runs/abc", "?x=1", "/bucket/key@v1"])


@settings(max_examples=400, deadline=None)
@given(_USER, _PASSWORD, _HOST, _TAIL, st.sampled_from(["{}", "at {} now", "'{}'", '"{}"', "({}).", "<{}>"]))
def test_a_password_never_survives_redaction(user: str, password: str, host: str, tail: str, around: str):
    text = around.format(f"http://{user}:{password}@{host}{tail}")
    assume(password not in around.format(f"http://{user}:@{host}{tail}"))  # ("/run" is in the tail's "/runs/")
    assert password not in redact(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_text_without_a_url_is_never_changed(text: str):
    if "://" not in text:
        assert redact(text) == text


# --- for_terminal: control characters shown, not obeyed


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J\x1b[Hclear", "\\x1b[2J\\x1b[Hclear"),  # clear screen, cursor home
        ("ok\rverified", "ok\\rverified"),  # a carriage return overwriting a line
        ("\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\", "\\x1b]8;;http://evil/\\x1b\\click\\x1b]8;;\\x1b\\"),  # OSC-8
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # window title, BEL
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
        ("a\u200bb", "a\\u200bb"),  # zero-width space
        ("\x9b31m", "\\x9b31m"),  # the one-byte CSI
        ("\x00\x7f", "\\x00\\x7f"),
        ("tag\U000e0041\U000e0042", "tag\\U000e0041\\U000e0042"),  # invisible tag characters
        ("line1\nline2\ttab", "line1\\nline2\\ttab"),
        ("plain ünïcode ✓", "plain ünïcode ✓"),
    ],
)
def test_for_terminal_shows_control_characters_as_escapes(text: str, shown: str):
    assert for_terminal(text) == shown


def test_for_terminal_keeps_line_breaks_when_asked():
    assert for_terminal("a\nb\x1b[2J\r", newlines=True) == "a\nb\\x1b[2J\\r"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_for_terminal_output_holds_no_control_character(text: str):
    shown = for_terminal(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert not any(c in shown for c in "\u202e\u202d\u2066\u2067\u2068\u2069\u200b\ufeff")


# --- for_markdown / for_html: literal text, no markup


def test_for_markdown_writes_markup_as_literal_text():
    shown = for_markdown("# Title\n[click](http://evil) <script>alert(1)</script> **b** | `x` ![i](y)")
    assert "\n" not in shown
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert "\\[click\\]\\(http://evil\\)" in shown
    assert shown.startswith("\\# Title")
    assert "\\*\\*b\\*\\*" in shown and "\\|" in shown and "\\`x\\`" in shown and "\\!\\[i\\]" in shown


def test_for_markdown_escapes_control_characters_too():
    assert for_markdown("a\x1b[2Jb") == "a\\\\x1b\\[2Jb"


def test_for_html_escapes_tags_quotes_and_controls():
    assert for_html('<img src=x onerror="alert(1)">&') == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;"
    assert for_html("it's") == "it&#x27;s"
    assert for_html("a\x1bb\nc") == "a\\x1bb\nc"
