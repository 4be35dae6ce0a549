"""The parts of scripts/gpu/gpu_check.py, one module per concept: the run's sizes and
shared state (``context``), time boxes and commands (``running``), the machine and the
inputs found there (``environment``), then the sections by what they check: the CUDA
tests (``cuda_tests``), training (``training``), speed against the reference
(``speed``), the user's commands (``commands``); and the report (``report``).
"""
