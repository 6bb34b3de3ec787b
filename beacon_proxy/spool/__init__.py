"""spool stage."""
