"""Cleanup: the only door into the queue (Received:, loop check, alias expansion, fix-ups)."""
