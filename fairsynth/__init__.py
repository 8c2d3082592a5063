"""fairsynth: fair synthetic training data from diffusion models with Distribution Guidance.

The package reads in the order the data moves: ``core`` (attributes, metrics, quotas, plugins),
``data`` (shards, reference readers, feed), ``diffusion`` (backends, the sampler signature, the
h-space hook), ``guidance`` (ADP, guidance, trajectories) and ``verify``, ``run`` (a resolved
run: windows, produce, judge, ledger, publish), ``app`` (params, stages, CLI) and
``experiments``; ``toyfaces`` is the embedded world, a plugin found by name.
"""
