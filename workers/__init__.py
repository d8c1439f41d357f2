"""RQ worker entry point and job functions. Jobs take ids, load them, and call mcc.services."""
