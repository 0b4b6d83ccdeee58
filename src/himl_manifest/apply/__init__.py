"""Apply: execute a plan through a backend, stamped with git provenance (see :mod:`.execute`)."""
