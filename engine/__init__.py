"""rekey engine: decides what happens to which object and in what order (config, planning, pipeline, CLI)."""
