"""Many processes: the shared distributed block (Lightning strategies, precision, launch facts) and
Ulysses sequence parallelism."""
