"""exactsync: keep Exact Online token chains alive unattended and copy the data into SQL.

The package is imported by the Azure Functions host on cold start, so nothing here may import
heavy SDKs at module level: each area loads its dependencies on first use.
"""

__version__ = "0.1.0"
