"""Loading, validating and describing manifests. Standard library, PyYAML and jsonschema only."""
