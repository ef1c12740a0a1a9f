"""Data on disk: the equiglass dataset format and the Bapst et al. (2020) files.

    load_dataset, read_configuration, write_configuration, write_manifest   our format
    read_bapst, read_bapst_file, bapst_propensity, convert_bapst, export_bapst   Bapst's pickles (read safely)
"""

from equiglass.data.bapst import (
    BapstConfiguration,
    bapst_propensity,
    convert_bapst,
    export_bapst,
    read_bapst,
    read_bapst_file,
)
from equiglass.data.format import (
    Dataset,
    load_dataset,
    read_configuration,
    write_configuration,
    write_manifest,
)

__all__ = [
    "BapstConfiguration",
    "Dataset",
    "bapst_propensity",
    "convert_bapst",
    "export_bapst",
    "load_dataset",
    "read_bapst",
    "read_bapst_file",
    "read_configuration",
    "write_configuration",
    "write_manifest",
]
