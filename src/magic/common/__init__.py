"""What both stages share: errors and exit codes, atomic file io, input validation, the artifact names between steps, torchrun helpers."""
