"""How customers reach their instances and prove who they are: SSH keys, API tokens
and their authentication, credentials at rest, access URLs, Cloudflare exposure."""
