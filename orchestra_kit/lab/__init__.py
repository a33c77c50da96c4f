"""The lab: load generation, results on disk, analysis and charts for orchestra_kit."""
