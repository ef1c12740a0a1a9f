"""Molecular dynamics of the Kob-Andersen mixture.

    kob_andersen   the model's parameters and an independent numpy energy/force implementation
    lammps         the LAMMPS engine (MD, thermostats, minimisation to inherent states)
    observables    unwrapping, propensity, MSD, F_s(q, t), tau_alpha
    generate       the iso-configurational dataset generator (`equiglass generate`)
"""
