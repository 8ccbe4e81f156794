"""Sweeps: a grid of jobs (:mod:`.grid`), submitted through submitit to Slurm or local processes
(:mod:`.submit`), with what is done decided by the results store (:mod:`.status`)."""
