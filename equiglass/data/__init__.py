"""Data: the equiglass dataset format, Bapst et al. (2020) files, graphs and descriptors of configurations.

    format        our format on disk: manifest.json + one .npz per configuration, validated, written atomically
                  (load_dataset, Dataset, read_configuration, write_configuration, write_manifest)
    bapst         Bapst et al.'s pickles, read safely (read_bapst, read_bapst_file, bapst_propensity),
                  converted to our format (convert_bapst) and written back (export_bapst)
    shiba         Shiba et al.'s iso-configurational .npz files, read strictly and converted (convert_shiba)
    glassbench    GlassBench's KA 3D files with the published models' predictions, converted (convert_glassbench)
    published     what both share: pickle-free .npz reading, array checks, time table, resumable conversion
    graphs        periodic neighbour lists, PyTorch Geometric graphs of configurations, PropensityDataset, splits
    descriptors   rotation-invariant structural descriptors per particle (radial densities, q_l, coarse-grained)
    geometry      periodic wrapping of positions and selection of particles by type
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
from equiglass.data.glassbench import convert_glassbench
from equiglass.data.shiba import convert_shiba

__all__ = [
    "BapstConfiguration",
    "Dataset",
    "bapst_propensity",
    "convert_bapst",
    "convert_glassbench",
    "convert_shiba",
    "export_bapst",
    "load_dataset",
    "read_bapst",
    "read_bapst_file",
    "read_configuration",
    "write_configuration",
    "write_manifest",
]
