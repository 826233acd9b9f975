"""`edgecompress fit`: the most accurate student that meets a device's budgets (space, cost, search, report)."""
