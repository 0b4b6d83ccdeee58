"""The in-job runner: finds a LightningContainer by name and trains, resumes or evaluates it.

The only layer that imports torch and Lightning, and only inside the functions that use them:
importing this package, :mod:`.container`, :mod:`.fields` or :mod:`.lookup` stays light. (MLflow
is imported by :mod:`.tracking` to record a run, and by the local backend.) A run is recorded
through :mod:`himl_manifest.records`, as apply's backends record it.

- :mod:`.container`: :class:`~.container.LightningContainer`, the class users subclass.
- :mod:`.fields`: the container's public fields, their types, and typed parsing of values.
- :mod:`.lookup`: find a container class by name.
- :mod:`.settings`: one :class:`~.settings.RunSettings` from `himl-runner` flags or a run spec.
- :mod:`.execute`: the single code path that runs those settings.
- :mod:`.submit`: ``--cluster``: the flags as the run specs of the equivalent manifest, each
  invocation's jobs new, with pre-flight and provenance.
- :mod:`.outputs`, :mod:`.checkpoints`, :mod:`.tracking`, :mod:`.trainer`, :mod:`.seeds`,
  :mod:`.results`, :mod:`.train`.
"""
