"""Writes of the accounting app: the ledger (``ledger``) and budget settings (``policies``)."""
