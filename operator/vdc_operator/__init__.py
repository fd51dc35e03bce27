"""vdc operator: reconciles VirtualDataCenter objects (issue 5/6)."""
