"""Where runners run, behind one interface (``base``): local child processes, forked from a
fork server or exec'd (``local``, ``fork_client``), Ray actors (``ray_actors``), and the CUDA
driver's checkpoints that suspend a local runner (``cuda_checkpoint``).

Imported by the fleet's supervisor and launcher only; imports ``host`` and ``runner_contract``,
never the gateway's other modules.
"""
