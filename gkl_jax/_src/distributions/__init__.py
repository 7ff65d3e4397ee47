"""The distribution types, one file each: diag, full, low_rank, mixture."""
