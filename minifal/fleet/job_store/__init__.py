"""Where queue requests live once accepted: a journal behind the gateway's queue.

The scheduler holds the live line; a job store keeps every accepted request, its status
changes, attempts, result and webhook state, so that a gateway that restarts (or another
gateway on the same Redis) picks the queue up. ``base`` is the seam (a Protocol and the stored
record), ``rules`` the pure queue rules (what to do with a request on resume, what retention
forgets), and ``memory``, ``sqlite``, ``redis`` the three implementations; ``choice`` turns
``--queue-store`` into one. Only ``fleet`` (the gateway and its forwarding) imports this.
"""
