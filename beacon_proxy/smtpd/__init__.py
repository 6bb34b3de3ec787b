"""smtpd stage."""
