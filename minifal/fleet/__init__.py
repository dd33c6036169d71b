"""The fleet: a gateway in front of runner processes."""
