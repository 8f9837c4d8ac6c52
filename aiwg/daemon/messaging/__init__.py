"""Messaging bridges (Telegram, Slack, Discord): one child service per platform."""
