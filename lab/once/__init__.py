"""One-off measurements, kept as they ran (paths updated to lab/): run from the project root as
`python -m lab.once.NAME`; each writes or prints the record named in its docstring."""
