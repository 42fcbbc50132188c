"""Fault-injection suite: the platform against killed daemons, restarted databases, killed
submitters, full disks and hostile input, on the real sandbox (see docs/fault-injection.md)."""
