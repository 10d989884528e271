"""The package's helpers beside the submission: each module here is a command or serves one."""
