"""The Slurm backend: ready tasks go out as job arrays, one ``sbatch`` per batch of one
(step, resource shape), short tasks bundled per array element; state from ``squeue`` (one
call per poll for the whole run) and from the tasks' own result files."""

from shoal.backends.slurm import profile
from shoal.backends.slurm.backend import SlurmBackend, cancel
from shoal.backends.slurm.profile import SlurmOptions

__all__ = ["SlurmBackend", "SlurmOptions", "cancel", "profile"]
