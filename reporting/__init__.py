"""Figures and tables shared by training runs, `make report` and the notebooks."""
