"""Simulation of the Kob-Andersen mixture with LAMMPS.

    lammps     the LAMMPS engine (MD, thermostats, minimisation to inherent states)
    generate   the iso-configurational dataset generator (`equiglass generate`)
"""
