"""Synthetic identities: pick class pairs (select), sample them into RecordIO shards (generate)
and compare representation spaces (align).

Submodules are imported on demand; importing this package loads nothing heavy.
"""
