"""PCL22's experiments as TOML specs (`equiglass experiment SPEC`).

    spec      the TOML spec: ExperimentSpec, load_spec, deep_merge
    datasets  an experiment's datasets: Bapst files converted once, their facts (T, τ_α, times)
    kinds     the kinds of experiment (compare, temperatures, transfer, features): registry KINDS
    report    results.json, the head of results.md, Pearson tables as JSON, plots
    runner    Experiment and run_experiment: the runs of one spec, trained, evaluated, reported
"""
