"""Training: run configs, the objective, the loop, checkpoints, transfer, data parallelism.

    config        TOML run configs ([data], [model], [train])
    loop          training a run config into a run directory (`equiglass train`): gradient steps
    closed_form   the closed-form (ridge) fit
    objective     target normalisation, the loss, the loss particles
    split         the training and validation graphs of a run
    progress      history, validation, best.pt / last.pt at the end of each epoch
    rundir        the run directory's other files: config, run.json, metrics.csv, resume check
    checkpoint    best.pt / last.pt and the trained model they hold
    transfer      a backbone from another run, frozen or not
    distributed   data parallelism under torchrun
    runtime       process settings: threads, deterministic algorithms, the allocator, device, seeds
"""
