"""Local mode: the embedded AWS emulator and the local Lambda runtime."""
