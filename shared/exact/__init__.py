"""Exact Online: the entity catalog, the REST client and webhook verification."""
