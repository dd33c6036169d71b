"""Facts and hygiene of this machine: the data dir, GPUs (``nvidia-smi``, fal's GPU type),
children that die with their parent, whether a process still runs, the CUDA driver library,
the log format, Python's collector, the body-size limit and the uvicorn server every process
runs.

``envs`` declares every ``MINIFAL_*`` environment variable (a leaf: it imports nothing of
minifal). Below everything: any part of minifal may import ``host``; ``host`` imports nothing of
minifal but ``runner_contract`` and itself.
"""
