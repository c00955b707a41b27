"""Soak tests: the gateway under steady load with faults injected, crashes, restarts."""
