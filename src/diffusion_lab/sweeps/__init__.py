"""Sweeps: one job's row, the multirun summary (summary.csv, .md, .png), the Hydra callback that
rebuilds it as jobs end, its W&B table, the launchers' settings and diffusion-summary."""
