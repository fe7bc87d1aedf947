"""Who may do what: token verification, the agency policy file, the one decision function, rate limits."""
