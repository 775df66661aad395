"""Test doubles for what cannot run here (Key Vault, managed identity), at the transport boundary."""
