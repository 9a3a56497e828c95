"""imagery: the patrol robots' snapshots checked, blurred for privacy, stored and linked."""
