"""Reading the user's tables: sources (catalog tables or paths), canonical columns and types, and
validation with a quarantine for every rejected row."""
