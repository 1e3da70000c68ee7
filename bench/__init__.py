"""`make bench`: performance measured on the local stack; prints a table, writes bench/results.json."""
