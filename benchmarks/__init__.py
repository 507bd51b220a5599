"""Suite definitions (suites/*.toml) and performance benchmarks."""
