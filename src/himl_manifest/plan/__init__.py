"""The pure planner and its renderers. No I/O, no clock."""
