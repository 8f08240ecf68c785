"""Task data: the task table, readers for the hub, GLUE folders, files and embedded corpora, and encoding."""
