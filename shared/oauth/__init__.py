"""The OAuth area: providers as data, the token endpoint client, the TokenKeeper (the token
protocol), keep-alive rotation, alerts and redaction; consent over HTTP and the CLI beside them.

Import the modules themselves (``shared.oauth.keeper``...): this package imports nothing, so a
trigger that needs one module does not pay for the others.
"""
