"""The shoal command: parses, calls the API, prints."""
