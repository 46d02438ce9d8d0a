"""Incident recovery, apart from the stream code: the S3 archiver, replay into the inbox, and rebuild."""
