"""Simulation of the Kob-Andersen mixture with LAMMPS.

    lammps     the LAMMPS engine (MD, thermostats, minimisation to inherent states)
    protocol   GenerationProtocol: every parameter of a generated dataset, its derived run lengths and seeds
    workers    the worker processes of the generator: executors, one LAMMPS instance each, their tasks
    generate   the iso-configurational dataset generator (`equiglass generate`): chains, manifest, files
    inherent   inherent states added to a dataset that lacks them (`equiglass inherent-states`)
"""
