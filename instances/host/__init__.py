"""What a host's worker does to its own machine: the Docker runtime, the GPU inventory
(NVML or simulated), the preflight of runc and the NVIDIA toolkit, workspaces.

Only the worker imports these; the web process never touches a host."""
