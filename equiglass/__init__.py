"""equiglass: SE(3)-equivariant graph neural networks for glassy liquids.

Subpackages:
    equiglass.md      Kob-Andersen model, LAMMPS engine, iso-configurational generator, observables
    equiglass.data    the on-disk dataset format and the Bapst et al. (2020) file reader
    equiglass.graphs  periodic neighbour lists and PyG graphs
    equiglass.nn      models (issue 3)
"""

__version__ = "0.1.0"
