"""The physics of the Kob-Andersen mixture, in numpy: the ground floor of equiglass.

    kob_andersen   the model's parameters and an independent energy/force implementation
    observables    unwrapping, propensity, MSD, F_s(q, t), tau_alpha
"""
