"""Task modules, one per domain. A task is a thin shell around plain
functions that do the work (those are what tests and benchmarks call)."""
