"""PCL22's experiments as TOML specs (`equiglass experiment SPEC`)."""
