"""Data on disk: the equiglass dataset format and the Bapst et al. (2020) files."""

from equiglass.data.format import (
    Dataset,
    load_dataset,
    read_configuration,
    write_configuration,
    write_manifest,
)

__all__ = ["Dataset", "load_dataset", "read_configuration", "write_configuration", "write_manifest"]
