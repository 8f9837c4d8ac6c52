"""A Notice rendered for Telegram, Slack and Discord: escaped, coloured, and within
every limit each platform enforces (a message over a limit is refused outright)."""

from __future__ import annotations

import html
import re

import pytest

from aiwg.core import notice_formats
from aiwg.core.messaging import Notice

TAIL = "ERROR: the real cause is at the end"


def telegram_visible(text: str) -> str:
    """What Telegram counts against its 4,096: the text after entity parsing."""
    return html.unescape(re.sub(r"</?(b|pre)>", "", text))


def discord_total(embed: dict) -> int:
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"]))


def slack_texts(message: dict) -> list[str]:
    """Every section text and field text (each has its own limit)."""
    out = []
    for block in message["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out.extend(f["text"] for f in block.get("fields", []))
    return out


def slack_body(message: dict) -> str:
    """The code block's content, without its fences."""
    text = message["blocks"][-1]["text"]["text"]
    assert text.startswith("```") and text.endswith("```")
    return text[3:-3]


def discord_body(message: dict) -> str:
    text = message["embeds"][0]["description"]
    assert text.startswith("```\n") and text.endswith("\n```")
    return text[4:-4]


def huge_body(filler: str = "x") -> str:
    return "\n".join(f"line {i} " + filler * 60 for i in range(2000)) + "\n" + TAIL


# -- escaping ------------------------------------------------------------------------


def test_telegram_escapes_markup_in_title_fields_and_body() -> None:
    """A task's prompt or output is untrusted text: it must not become HTML."""
    notice = Notice(title="Task <t-1> & co", severity="error",
                    fields=(("a<b", "x > y & z"),), body="<script>alert(1)</script>")
    text = notice_formats.telegram(notice)
    assert "<b>Task &lt;t-1&gt; &amp; co</b>" in text
    assert "<b>a&lt;b</b>: x &gt; y &amp; z" in text
    assert "<pre>&lt;script&gt;alert(1)&lt;/script&gt;</pre>" in text
    assert "<script>" not in text
    # Only our own tags remain.
    assert set(re.findall(r"</?([a-z]+)>", text)) <= {"b", "pre"}


def test_slack_escapes_control_characters_everywhere() -> None:
    """`<`, `>` and `&` start Slack links and mentions (`<!channel>`)."""
    notice = Notice(title="<!channel> & <@U1>", severity="warning",
                    fields=(("k<", "<!here> & >"),), body="a < b && c > d")
    message = notice_formats.slack(notice)
    joined = "\n".join(slack_texts(message))
    assert "<!channel>" not in joined and "<!here>" not in joined and "<@U1>" not in joined
    assert "&lt;!channel&gt; &amp; &lt;@U1&gt;" in message["blocks"][0]["text"]["text"]
    assert message["blocks"][1]["fields"][0]["text"] == "*k&lt;*\n&lt;!here&gt; &amp; &gt;"
    assert slack_body(message) == "a &lt; b &amp;&amp; c &gt; d"
    # The fallback `text` is formatted by Slack too: a prompt saying <!channel> must not ping anyone.
    assert message["text"].startswith("&lt;!channel&gt; &amp; &lt;@U1&gt;")


def test_discord_never_expands_mentions() -> None:
    """`@everyone` in a task's output must not ping a whole server."""
    message = notice_formats.discord(Notice(title="@everyone", severity="info", body="<@123> @here"))
    assert message["allowed_mentions"] == {"parse": []}
    assert "<@123> @here" in message["embeds"][0]["description"]


# -- severity ------------------------------------------------------------------------


@pytest.mark.parametrize("severity, icon, colour", [
    ("info", "✅", 0x2EB67D), ("warning", "⚠️", 0xECB22E), ("error", "🚨", 0xE01E5A),
])
def test_severity_shows_as_icon_and_colour(severity: str, icon: str, colour: int) -> None:
    """The severity is visible at a glance on every platform."""
    notice = Notice(title="Something", severity=severity)
    assert notice_formats.telegram(notice).startswith(f"{icon} <b>Something</b>")
    assert notice_formats.slack(notice)["blocks"][0]["text"]["text"] == f"{icon} *Something*"
    embed = notice_formats.discord(notice)["embeds"][0]
    assert embed["title"] == f"{icon} Something" and embed["color"] == colour


def test_an_unknown_severity_gets_no_icon_and_the_info_colour() -> None:
    """Never a KeyError for a severity the renderer does not know."""
    notice = Notice(title="Odd", severity="debug")
    assert notice_formats.telegram(notice) == "<b>Odd</b>"
    assert notice_formats.discord(notice)["embeds"][0]["color"] == 0x2EB67D


def test_no_body_means_no_code_block() -> None:
    """An empty `<pre>` or code block would be noise (and Telegram rejects empty entities)."""
    notice = Notice(title="T", severity="info", fields=(("k", "v"),))
    assert "<pre>" not in notice_formats.telegram(notice)
    assert len(notice_formats.slack(notice)["blocks"]) == 2
    assert "description" not in notice_formats.discord(notice)["embeds"][0]


# -- limits and the tail --------------------------------------------------------------


@pytest.mark.parametrize("filler", ["x", "<&>"])
def test_a_huge_body_keeps_its_end_within_every_limit(filler: str) -> None:
    """The error is at the end of an output: cut the head, keep the tail, mark the cut."""
    notice = Notice(title="Task t-1 failed", severity="error",
                    fields=(("project", "/srv/app"), ("exit code", "1")), body=huge_body(filler))

    tg = notice_formats.telegram(notice)
    assert len(telegram_visible(tg)) <= 4096
    assert tg.endswith(html.escape(TAIL, quote=False) + "</pre>")
    assert "<pre>…" in tg

    sl = notice_formats.slack(notice)
    assert len(sl["text"]) <= 3000
    assert html.unescape(slack_body(sl)).endswith(TAIL) and slack_body(sl).startswith("…")

    dc = notice_formats.discord(notice)
    embed = dc["embeds"][0]
    assert discord_body(dc).endswith(TAIL) and discord_body(dc).startswith("…")
    assert len(embed["description"]) <= 4096 and discord_total(embed) <= 6000


def test_slack_section_text_stays_under_3000_for_a_plain_body() -> None:
    """Slack rejects the whole message when one section's text passes 3,000."""
    sl = notice_formats.slack(Notice(title="T" * 5000, severity="error", body=huge_body()))
    assert all(len(t) <= 3000 for t in slack_texts(sl))
    assert len(sl["blocks"][0]["text"]["text"]) < 200  # the title was cut


def test_slack_section_text_stays_under_3000_when_escaping_lengthens_the_body() -> None:
    """The limit applies to the text as sent, entities included."""
    sl = notice_formats.slack(Notice(title="T", severity="error", body=huge_body("<&>")))
    assert all(len(t) <= 3000 for t in slack_texts(sl))


def test_slack_fields_are_at_most_ten_and_each_within_2000() -> None:
    """A section holds at most ten fields of at most 2,000 characters."""
    fields = tuple((f"key {i} <", "v&" * 3000) for i in range(30))
    sl = notice_formats.slack(Notice(title="T", severity="info", fields=fields))
    shown = sl["blocks"][1]["fields"]
    assert len(shown) == 10
    assert all(len(f["text"]) <= 2000 and f["text"].endswith("…") for f in shown)
    assert shown[0]["text"].startswith("*key 0 &lt;*\n")


def test_discord_fields_are_cut_to_their_limits() -> None:
    """At most 25 fields, names ≤ 256, values ≤ 1,024; fields that would pass the
    6,000 total give way to one "… N more"; an empty value becomes a zero-width space."""
    fields = tuple(("n" * 300, "v" * 2000) for _ in range(30)) + (("empty", ""),)
    embed = notice_formats.discord(Notice(title="T" * 400, severity="info", fields=fields))["embeds"][0]
    assert len(embed["title"]) == 256 and embed["title"].endswith("…")
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])
    assert embed["fields"][-1]["name"] == "…" and embed["fields"][-1]["value"].endswith("more")
    many = tuple((f"n{i}", "v") for i in range(40))
    small_fields = notice_formats.discord(Notice(title="T", severity="info", fields=many))["embeds"][0]["fields"]
    assert len(small_fields) == 25
    assert not embed["fields"][0]["inline"]
    small = notice_formats.discord(Notice(title="T", severity="info", fields=(("empty", ""), ("n", "5"))))
    assert small["embeds"][0]["fields"] == [{"name": "empty", "value": "\u200b", "inline": True},
                                            {"name": "n", "value": "5", "inline": True}]


def test_discord_embed_total_stays_under_6000_with_many_huge_fields() -> None:
    """Discord refuses an embed whose title, description and fields exceed 6,000 in all."""
    fields = tuple(("n" * 300, "v" * 2000) for _ in range(30))
    embed = notice_formats.discord(Notice(title="T", severity="info", fields=fields, body="b"))["embeds"][0]
    assert discord_total(embed) <= 6000


def test_telegram_huge_fields_are_cut_each() -> None:
    """One long field value (an error text) is cut, not the whole message refused."""
    notice = Notice(title="T" * 1000, severity="error", fields=(("error", "e" * 5000),), body="tail")
    text = notice_formats.telegram(notice)
    assert len(telegram_visible(text)) <= 4096
    assert "T" * 200 not in text and "e" * 500 not in text
    assert text.endswith("<pre>tail</pre>")


def test_telegram_many_fields_stay_within_4096() -> None:
    """The number of fields is the caller's, the limit is Telegram's."""
    fields = tuple((f"field {i}", "v" * 600) for i in range(30))
    text = notice_formats.telegram(Notice(title="T", severity="error", fields=fields, body="tail"))
    assert len(telegram_visible(text)) <= 4096


# -- code fences ------------------------------------------------------------------------


@pytest.mark.parametrize("ticks", [3, 4, 6])
def test_backticks_in_the_body_do_not_close_the_code_block(ticks: int) -> None:
    """Output with ``` (Markdown in a task's result) must not end the fence early."""
    body = f"before {'`' * ticks} after"
    assert "```" not in slack_body(notice_formats.slack(Notice(title="T", severity="info", body=body)))
    assert "```" not in discord_body(notice_formats.discord(Notice(title="T", severity="info", body=body)))


def test_a_run_of_five_backticks_does_not_close_the_code_block() -> None:
    """Any run of backticks, not only multiples of three."""
    body = "before ````` after"
    assert "```" not in slack_body(notice_formats.slack(Notice(title="T", severity="info", body=body)))
    assert "```" not in discord_body(notice_formats.discord(Notice(title="T", severity="info", body=body)))


def test_a_backtick_heavy_body_stays_within_the_limits() -> None:
    """Markdown-heavy output is common; its escaping must fit the same room."""
    notice = Notice(title="T", severity="info", body="```" * 3000)
    assert all(len(t) <= 3000 for t in slack_texts(notice_formats.slack(notice)))
    assert len(notice_formats.discord(notice)["embeds"][0]["description"]) <= 4096


def test_cut_marks_what_it_shortens() -> None:
    """A shortened text ends with … and never exceeds the limit."""
    assert notice_formats.cut("abc", 3) == "abc"
    assert notice_formats.cut("abcdef", 4) == "abc…"
    assert len(notice_formats.cut("x" * 100, 10)) == 10
