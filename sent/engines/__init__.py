"""Training engines and their adapters: `local` (one process), `verl` (a stage as a verl job:
plans it, and imports verl only to compose and check its config), `verl_plugin` (our losses inside
verl's workers), `verl_cpu` (verl's trainer on CPU)."""
