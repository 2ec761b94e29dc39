"""drkit: disaster-recovery rehearsal, on-call runbooks and auditable evidence."""

__version__ = "0.1.0"
