"""The site's physical machines: the shared inventory, SSH sessions with deadlines, fleet checks
and operations (exec, drain, resume, logs). paramiko is imported only when a host is contacted."""
