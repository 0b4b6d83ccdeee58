"""The Azure ML backend: the workspace's jobs are the run store, Azure ML runs them.

Modules (azure-ai-ml and azure-identity are imported lazily, inside functions, and only here):

- :mod:`.workspace`: which workspace (config.json upward, ``compute.workspace_config``, or
  environment variables), credentials (azure-identity's default chain) with short timeouts,
  the ``MLClient``; a missing ``azure`` extra is a :class:`~himl_manifest.errors.BackendUnavailable`
  with the install hint.
- :mod:`.jobs`: a :class:`~himl_manifest.spec.RunSpec` -> one ``CommandJob`` (name, experiment,
  display name, command, environment, code, distribution, resources, inputs, tags, properties).
- :mod:`.snapshot`: the code snapshot (``.amlignore`` / ``.gitignore``, size limit, symlinks,
  content hash) behind the one upload seam.
- :mod:`.store`: :class:`AzureMLBackend`, the run store and executor over the workspace.
"""
