"""A local, Exact Online-compatible server for tests and demos (``exactsync sandbox``).

Nothing can reach Exact Online from here, and a real administration has a small API budget and
one fragile token chain, so every test and the demo talk to this sandbox instead. It is only
worth what its fidelity is worth: where the facts are unsure it takes the stricter reading, so a
client that passes here does not break in production.

Import ``shared.sandbox.server.start_sandbox`` to run one in-process; this package module
imports nothing so that ``exactsync`` stays cheap to start.
"""
