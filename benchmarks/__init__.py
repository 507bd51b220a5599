"""Performance and cost benchmarks (``python -m uqbench.benchmarks.<name>``); not part of a run."""
