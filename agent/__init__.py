"""boniq-agent: the till-side store agent for BONIQ digital receipts.

Pipeline (Vector's model): scanner sources and the POS poller are sources, the matcher is the
transform, the SQLite outbox is the disk buffer, the uploader is the sink.
"""

__version__ = "0.1.0"
