"""herald's command line (`herald ...`): a shell on top of the core; nothing imports it."""
