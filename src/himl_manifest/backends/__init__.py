"""Run stores and executors behind one small interface (see :mod:`.base`)."""
