"""The customer API under /api/gpu/: instances, SSH keys, API tokens, availability."""
