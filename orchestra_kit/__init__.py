"""orchestra_kit."""
