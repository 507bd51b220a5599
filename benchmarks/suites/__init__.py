"""The built-in suite files, installed as package data of ``uqbench.builtin_suites``."""
