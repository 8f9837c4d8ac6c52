"""What submits work by itself: automation rules, scheduled jobs, and the
debounce and cron timers under them."""
