"""certstore's host side: the CLI, the per-host agent, the certmgr role and the local services."""

__version__ = "0.1.0"
