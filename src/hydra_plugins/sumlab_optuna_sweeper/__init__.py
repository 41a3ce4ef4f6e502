"""sumlab's Hydra sweeper on current Optuna (ask/tell, pruning, resume, parallel workers).

Hydra imports every module under ``hydra_plugins`` at start-up: this package only registers configs
and defines the plugin class; Optuna is imported when a sweep starts.
"""
