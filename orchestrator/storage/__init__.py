"""Artifacts and their bytes: the artifact record, in-memory media values, codecs (validation and
sniffing), the content-addressed store, JSON Lines files, pictures of media values and sample inputs."""
