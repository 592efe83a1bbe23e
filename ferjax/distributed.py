"""Multi-host start-up: JAX's own distributed runtime, when launched under a cluster.

`jax.distributed.initialize()` finds the coordinator itself under SLURM, Open MPI and on
Cloud TPU pods; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID (see README, "Many devices and hosts"). A single process needs nothing.
"""

from __future__ import annotations

import os

import jax

_CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                 "TPU_WORKER_HOSTNAMES")


def maybe_initialize() -> bool:
  """Initialises the distributed runtime if this process was launched as one of many.

  Returns True if it did. FERJAX_DISTRIBUTED=0 turns this off, =1 forces it.
  """
  flag = os.environ.get("FERJAX_DISTRIBUTED")
  if flag == "0":
    return False
  many = flag == "1" or any(os.environ.get(v) for v in _CLUSTER_VARS)
  if os.environ.get("SLURM_NTASKS") == "1" and flag != "1":
    many = False
  if not many:
    return False
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
  return True
