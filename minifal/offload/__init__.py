"""Moving an App's GPU tensors to host memory and back at the same addresses, so that a
suspended runner's driver checkpoint carries little and its resume runs at the link's speed.

``arena`` lays the modules' parameters and buffers out in one block of device memory whose
addresses outlive its physical memory (``cuda_vmm``: the driver's virtual memory calls);
``suspension`` keeps this process's arenas and is what the App and the runner call:
``keep_addresses(*modules)`` after loading, and the runner's ``/_minifal/offload`` and
``/_minifal/restore`` routes around a checkpoint.

Imported by the user's App (``minifal.offload.suspension.keep_addresses``), the runner's offload
route, and the fleet (the ``Offloaded`` record a runner answers with); imports nothing of
minifal but ``host`` (the CUDA driver library), and torch only once an App asks for an arena.
"""
