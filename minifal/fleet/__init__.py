"""The fleet: a gateway in front of runner processes (``minifal run``'s own process).

Flat: the routes (``http_api``), one forwarding path for every door, the scheduler and the
scaler (pure policies), the supervisor that owns each runner's state, jobs, metrics, webhooks
and the dashboard; ``backends/`` starts runners (local processes, forked or exec'd; Ray actors).
docs/architecture.md draws who calls whom.

Only the CLI imports the fleet. The fleet imports what the gateway needs without serving an
App: the runner contract, the App's manifest (read in a child process), the runner's import
record and stored-files route, the offload record a runner answers with (``offload``),
``host``, ``startup``, ``compat``, and the SSRF check of
``toolkit``; never a runner's server or the user's App.
"""
