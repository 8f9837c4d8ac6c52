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

import re
from typing import Any

from aiwg.core.messaging import LIMITS, Notice, slack_escape, telegram_html

ICON = {"info": "✅", "warning": "⚠️", "error": "🚨"}
DISCORD_COLOUR = {"info": 0x2EB67D, "warning": 0xECB22E, "error": 0xE01E5A}
#: Characters kept for the body (the output tail) when fields would take everything.
BODY_RESERVE = 1000


def cut(text: str, limit: int, marker: str = "…") -> str:
    """At most `limit` characters; a cut text ends with the marker."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def _tail(text: str, limit: int) -> str:
    """The end of an output (where the error usually is), marked when cut."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _unfenced(text: str) -> str:
    """No run of backticks survives to close a code block early (zero-width spaces between)."""
    return re.sub(r"``+", lambda m: "\u200b".join(m.group(0)), text)


def _fitting_fields(fields: tuple[tuple[str, str], ...], name_limit: int, value_limit: int,
                    budget: int, count: int) -> list[tuple[str, str]]:
    """Fields cut to their limits, as many as fit in `budget` characters (then one marker)."""
    kept: list[tuple[str, str]] = []
    used = 0
    for name, value in fields[:count]:
        name, value = cut(name, name_limit), cut(value, value_limit)
        if used + len(name) + len(value) > budget:
            if used + 20 <= budget and len(kept) < count:
                kept.append(("…", f"{len(fields) - len(kept)} more"))
            break
        kept.append((name, value))
        used += len(name) + len(value)
    return kept


def telegram(notice: Notice) -> str:
    """HTML for sendMessage with parse_mode HTML (the caller must not escape again).
    Telegram counts the characters left after entity parsing, so the budget is
    counted on the raw text; tags and entities do not use it up."""
    limit = LIMITS["telegram"]
    title = cut(notice.title, 200)
    fields = _fitting_fields(notice.fields, 100, 500, limit - BODY_RESERVE - len(title), 50)
    lines = [f"{ICON.get(notice.severity, '')} <b>{telegram_html(title)}</b>".strip()]
    lines += [f"<b>{telegram_html(k)}</b>: {telegram_html(v)}" for k, v in fields]
    text = "\n".join(lines)
    visible = len(title) + 3 + sum(len(k) + len(v) + 3 for k, v in fields)
    room = limit - visible - 8
    if notice.body and room > 40:
        text += f"\n<pre>{telegram_html(_tail(notice.body, room))}</pre>"
    return text


def slack(notice: Notice) -> dict[str, Any]:
    """`text` (fallback) and `blocks` for chat.postMessage or an incoming webhook.
    Limits apply to the escaped text, so escaping comes before cutting."""
    title = f"{ICON.get(notice.severity, '')} *{cut(slack_escape(notice.title), 150)}*".strip()
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": title}}]
    if notice.fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": cut(f"*{slack_escape(k)}*\n{slack_escape(v)}", 2000)}
            for k, v in notice.fields[:10]
        ]})
    if notice.body:
        body = _tail(_unfenced(slack_escape(notice.body)), 3000 - 6)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```"}})
    return {"text": cut(slack_escape(notice.plain()), 3000), "blocks": blocks}


def discord(notice: Notice) -> dict[str, Any]:
    """A message body with one embed (for a channel message or a webhook), within
    Discord's per-field limits and its 6,000-character total."""
    title = cut(f"{ICON.get(notice.severity, '')} {notice.title}".strip(), 256)
    fields = _fitting_fields(notice.fields, 256, 1024, 6000 - BODY_RESERVE - len(title), 25)
    embed: dict[str, Any] = {
        "title": title,
        "color": DISCORD_COLOUR.get(notice.severity, DISCORD_COLOUR["info"]),
        "fields": [{"name": k, "value": v or "\u200b", "inline": len(v) <= 40} for k, v in fields],
    }
    used = len(title) + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    if notice.body:
        room = min(4096, 6000 - used) - len("```\n\n```")
        if room > 40:
            embed["description"] = "```\n" + _tail(_unfenced(notice.body), room) + "\n```"
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}
