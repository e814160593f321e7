"""tagging package."""
