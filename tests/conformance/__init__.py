"""Conformance of the sandbox and the client to /work/shared/reference/exact-online-api.md.

Written from the reference facts, not from our code: each test names the reference row it checks.
"""
