"""Training: run configs, the objective, the loop, checkpoints, transfer, data parallelism.

    config        TOML run configs ([data], [model], [train])
    loop          gradient training of a run config into a run directory (`equiglass train`)
    checkpoint    best.pt / last.pt and the trained model they hold
    transfer      a backbone from another run, frozen or not
    distributed   data parallelism under torchrun
    runtime       process settings: threads, deterministic algorithms, the allocator
"""
