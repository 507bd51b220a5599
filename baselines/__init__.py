"""Baseline posterior families of the paper's Table 1, registered through the public API."""
