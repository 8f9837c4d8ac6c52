# tests: tests/core/test_notice_formats.py
"""A Notice as each platform shows it, cut to that platform's limits. Pure.

- Telegram: HTML (`<b>`, `<pre>`), escaped, one message of at most 4,096
  characters after entity parsing.
- Slack: a plain `text` fallback (what notifications and screen readers show)
  plus Block Kit blocks: a section with the title, up to ten short fields, and
  the body as a code block; a section's text is at most 3,000 characters.
- Discord: one embed (title ≤ 256, description ≤ 4,096, field names ≤ 256,
  values ≤ 1,024, at most 25 fields, 6,000 characters in all) coloured by
  severity; mentions are never expanded (`allowed_mentions` empty).
"""

from __future__ import annotations

from typing import Any

from aiwg.core.messaging import LIMITS, Notice, slack_escape, telegram_html

ICON = {"info": "✅", "warning": "⚠️", "error": "🚨"}
DISCORD_COLOUR = {"info": 0x2EB67D, "warning": 0xECB22E, "error": 0xE01E5A}


def cut(text: str, limit: int, marker: str = "…") -> str:
    """At most `limit` characters; a cut text ends with the marker."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def _tail(text: str, limit: int) -> str:
    """The end of an output (where the error usually is), marked when cut."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def telegram(notice: Notice) -> str:
    """HTML for sendMessage with parse_mode HTML (the caller must not escape again)."""
    head = f"{ICON.get(notice.severity, '')} <b>{telegram_html(cut(notice.title, 200))}</b>".strip()
    lines = [head] + [f"<b>{telegram_html(k)}</b>: {telegram_html(cut(v, 500))}" for k, v in notice.fields]
    text = "\n".join(lines)
    if notice.body:
        room = LIMITS["telegram"] - len(text) - len("\n<pre></pre>") - 16
        if room > 40:
            text += f"\n<pre>{telegram_html(_tail(notice.body, room))}</pre>"
    return text


def slack(notice: Notice) -> dict[str, Any]:
    """`text` (fallback) and `blocks` for chat.postMessage or an incoming webhook."""
    title = f"{ICON.get(notice.severity, '')} *{slack_escape(cut(notice.title, 150))}*".strip()
    fallback = cut(notice.plain(), 3000)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": title}}]
    if notice.fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": cut(f"*{slack_escape(k)}*\n{slack_escape(v)}", 2000)}
            for k, v in notice.fields[:10]
        ]})
    if notice.body:
        body = slack_escape(_tail(notice.body, 2900)).replace("```", "` ` `")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```"}})
    return {"text": fallback, "blocks": blocks}


def discord(notice: Notice) -> dict[str, Any]:
    """A message body with one embed (for a channel message or a webhook)."""
    fields = [{"name": cut(k, 256), "value": cut(v, 1024) or "\u200b", "inline": len(v) <= 40}
              for k, v in notice.fields[:25]]
    embed: dict[str, Any] = {
        "title": cut(f"{ICON.get(notice.severity, '')} {notice.title}".strip(), 256),
        "color": DISCORD_COLOUR.get(notice.severity, DISCORD_COLOUR["info"]),
        "fields": fields,
    }
    used = len(embed["title"]) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    if notice.body:
        room = min(4096, 6000 - used) - len("```\n\n```")
        if room > 40:
            embed["description"] = "```\n" + _tail(notice.body, room).replace("```", "` ` `") + "\n```"
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}
