"""Training engines and their adapters. `verl_plugin` is the only module that imports verl."""
