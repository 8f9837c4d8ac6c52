"""Pure logic: no Twisted, no I/O, no clock reads. Time is passed in as `now`."""
