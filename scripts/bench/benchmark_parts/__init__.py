"""The parts of scripts/bench/benchmark.py, one module per concept: the set-ups
(``setups``), where inputs come from (``paths``), timing (``timing``), the training step
(``training``), stylizing (``stylizing``), FLOPs and the machine's peak (``flops``), the
data pipeline (``data_pipeline``), peak memory in fresh processes (``memory``), the
reference implementation (``reference``), the tables (``report``), one run's shared state
(``run``) and each set-up's figure groups (``figure_groups``).

scripts/gpu/gpu_check.py builds on the same set-ups, steps and timers.
"""

import warnings

# Lightning's "self.log() without a trainer" (the step runs outside one) and the TF32
# notices: the same filters for every part, and for gpu_check, which imports them.
warnings.filterwarnings("ignore", message=".*self.log.*")
warnings.filterwarnings("ignore", message=".*TF32.*")
