"""What is on the topics: the envelope, decoding a record, retry notices, safe text."""
