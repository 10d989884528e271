"""The maintainers' lab: the experiments behind the package's numbers (lab/README.md). Run its
scripts from the project root as modules, `python -m lab.NAME`, so that they import
segmentation.py and run_tests.py as the package's own code."""
