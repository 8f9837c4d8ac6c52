"""The file watcher: watchdog observers on a cover of the project's tree,
events handed to the reactor."""
