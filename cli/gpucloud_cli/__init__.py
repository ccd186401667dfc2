"""gpucloud: the command-line client of a GPU Cloud server."""
